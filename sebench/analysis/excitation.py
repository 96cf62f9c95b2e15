"""Excitation recording and statistics: the "Role of Excitation" study of Hu et al. (sources 001, 003).

The paper feeds images of four unalike classes through a trained SE-ResNet-50 and plots, for blocks at
increasing depth (SE_2_3, SE_3_4, SE_4_6, SE_5_1, SE_5_2, SE_5_3), the mean excitation of 50 channels per
class next to the mean over all classes, then mean +- std within two classes. Its claims: early blocks are
class-agnostic, later ones class-specific; SE_5_2 is nearly all 1 (saturated); SE_5_3 has a similar
pattern across classes that differs in scale. This module measures what those claims need as numbers:

* :class:`ExcitationRecorder` hooks each chosen SE module's ``.gate`` (its output *is* the gate values)
  and aggregates per block and per class in one streaming pass: count, mean and sum of squared
  deviations per channel (float64, merged batch by batch with Chan et al.'s parallel update, so the
  result equals a two-pass computation over all images), and the count of (image, channel) values above
  saturation thresholds. For NoSqueeze (``squeeze='none'``) the gate is per position; it is averaged
  over H, W first, so there is one value per image and channel everywhere.
* :class:`ExcitationStats` answers the questions: per-class and overall channel means and stds,
  :meth:`~ExcitationStats.class_specificity`, :meth:`~ExcitationStats.saturation_share`; and turns into a
  tidy data frame / CSV (and back, :meth:`~ExcitationStats.from_frame`).
* :func:`record` runs (x, y) batches through a model in eval mode under ``torch.inference_mode``.

Drawing is :mod:`sebench.analysis.figures`, which reads these statistics (never the other way round);
:func:`sebench.analysis.run.analyze` records, writes the CSVs and draws the four figures.

Standard deviations are population stds (ddof=0) over the images of a class.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from sebench.store import atomic_open
from sebench.errors import UserError
from sebench.layers.se import SqueezeExcite, se_modules

ALL = "all"  # the class name used for the all-classes aggregate in frames and figures
DEFAULT_THRESHOLD = 0.95
TIDY_COLUMNS = ["block", "depth_index", "class", "channel", "mean", "std", "count"]
SUMMARY_COLUMNS = ["block", "depth_index", "channels", "images", "classes", "specificity",
                   "specificity_adj", "specificity_chance", "saturation_share", "mean_gate", "std_gate"]

_TAG = re.compile(r"^SE_(\d+)_(\d+)$")
_SAT_PREFIX = "n_gt_"

BlockSpec = Union[None, str, Sequence[str]]
ClassKey = Union[int, str]


# ---------------------------------------------------------------------------------------------------
# Block selection
# ---------------------------------------------------------------------------------------------------

def parse_tag(tag: str) -> Optional[tuple[int, int]]:
    """``'SE_3_4'`` -> (3, 4); None for tags that are not paper-style (e.g. module paths)."""
    m = _TAG.match(tag)
    return (int(m.group(1)), int(m.group(2))) if m else None


def paper_blocks(tags: Sequence[str], max_blocks: int = 6) -> list[str]:
    """The paper's selection rule, generalised: the last block of every stage but the final one, and
    the first, second-to-last and last block of the final stage.

    For SE-ResNet-50 (stages 2..5 of 3/4/6/3 blocks) this is exactly the paper's SE_2_3, SE_3_4, SE_4_6,
    SE_5_1, SE_5_2, SE_5_3; for a CIFAR ResNet-20 it is SE_1_3, SE_2_3, SE_3_1, SE_3_2, SE_3_3. Tags
    that are not ``SE_<stage>_<block>`` fall back to `max_blocks` blocks evenly spaced in depth.
    Returned in depth (model) order.
    """
    tags = list(tags)
    parsed = [parse_tag(t) for t in tags]
    if not tags:
        return []
    if any(p is None for p in parsed):
        return evenly_spaced(tags, max_blocks)
    stages: dict[int, list[str]] = {}
    for t, (s, _) in zip(tags, parsed):
        stages.setdefault(s, []).append(t)
    order = list(stages)
    chosen = {stages[s][-1] for s in order[:-1]}
    last = stages[order[-1]]
    chosen |= {last[0], last[-1]} | ({last[-2]} if len(last) >= 2 else set())
    return [t for t in tags if t in chosen]


def evenly_spaced(tags: Sequence[str], n: int) -> list[str]:
    """`n` tags spread evenly over depth, always including the first and the last."""
    tags = list(tags)
    if n >= len(tags):
        return tags
    if n <= 1:
        return tags[-1:]
    idx = sorted({round(i * (len(tags) - 1) / (n - 1)) for i in range(n)})
    return [tags[i] for i in idx]


def resolve_blocks(model_or_tags: Union[nn.Module, Sequence[str]], blocks: BlockSpec = None) -> list[str]:
    """Turn a block request into SE tags in depth order.

    `blocks`: None or ``'paper'`` (:func:`paper_blocks`), ``'all'``, or a list of tags (``'SE_3_2'``).
    Unknown tags raise UserError listing the available ones.
    """
    tags = list(se_modules(model_or_tags)) if isinstance(model_or_tags, nn.Module) else list(model_or_tags)
    if not tags:
        raise UserError("the model has no SE modules, so there is no excitation to record",
                        field="model.se", fix="build it with se='se' (or another SE variant)")
    if blocks is None or blocks == "paper":
        return paper_blocks(tags)
    if blocks == "all":
        return tags
    if isinstance(blocks, str):
        blocks = [blocks]
    blocks = list(blocks)
    unknown = [b for b in blocks if b not in tags]
    if unknown:
        raise UserError(f"unknown SE block(s) {unknown}", field="blocks",
                        fix=f"available: {', '.join(tags)} (or 'all', 'paper')")
    if not blocks:
        raise UserError("no SE blocks selected (empty list)", field="blocks",
                        fix=f"available: {', '.join(tags)}")
    wanted = set(blocks)
    return [t for t in tags if t in wanted]  # depth order, no duplicates


# ---------------------------------------------------------------------------------------------------
# Streaming per-class moments
# ---------------------------------------------------------------------------------------------------

@dataclass
class BlockStats:
    """Per-class moments of one SE block's gate values: K classes x C channels, float64.

    ``count[k]`` images of class k, ``mean[k, c]`` their mean gate value on channel c, ``m2[k, c]`` the sum
    of squared deviations from that mean, ``above[t][k, c]`` how many of them exceed threshold t.
    """

    tag: str
    depth_index: int
    channels: int
    count: np.ndarray           # [K] int64
    mean: np.ndarray            # [K, C] float64
    m2: np.ndarray              # [K, C] float64
    above: dict[float, np.ndarray] = field(default_factory=dict)  # threshold -> [K, C] int64

    @classmethod
    def empty(cls, tag: str, depth_index: int, channels: int, num_classes: int,
              thresholds: Sequence[float]) -> "BlockStats":
        k, c = num_classes, channels
        return cls(tag, depth_index, channels, np.zeros(k, np.int64), np.zeros((k, c)), np.zeros((k, c)),
                   {float(t): np.zeros((k, c), np.int64) for t in thresholds})

    def grow(self, num_classes: int) -> None:
        extra = num_classes - len(self.count)
        if extra <= 0:
            return
        self.count = np.concatenate([self.count, np.zeros(extra, np.int64)])
        self.mean = np.concatenate([self.mean, np.zeros((extra, self.channels))])
        self.m2 = np.concatenate([self.m2, np.zeros((extra, self.channels))])
        self.above = {t: np.concatenate([a, np.zeros((extra, self.channels), np.int64)])
                      for t, a in self.above.items()}

    def update(self, g: Union[torch.Tensor, np.ndarray], y: Union[torch.Tensor, np.ndarray]) -> None:
        """Merge one batch: gate values `g` [N, C] and integer labels `y` [N] (Chan et al. 1979).

        The batch's per-class moments come from one stable sort by label and segment sums (numpy; torch's
        CPU ``index_add_`` stalls badly on small tensors when the machine is busy)."""
        if isinstance(g, torch.Tensor):
            g = g.detach().to("cpu", torch.float64).numpy()
        if isinstance(y, torch.Tensor):
            y = y.detach().cpu().numpy()
        g = np.asarray(g, dtype=np.float64)
        y = np.asarray(y, dtype=np.int64)
        if len(y) == 0:
            return
        order = np.argsort(y, kind="stable")
        ys, gs = y[order], g[order]
        cls, starts, nb = np.unique(ys, return_index=True, return_counts=True)
        mb = np.add.reduceat(gs, starts, axis=0) / nb[:, None]
        m2b = np.add.reduceat((gs - np.repeat(mb, nb, axis=0)) ** 2, starts, axis=0)
        na = self.count[cls].astype(np.float64)
        n = na + nb
        delta = mb - self.mean[cls]
        self.mean[cls] += delta * (nb / n)[:, None]
        self.m2[cls] += m2b + delta ** 2 * (na * nb / n)[:, None]
        self.count[cls] += nb
        for t in self.above:
            self.above[t][cls] += np.add.reduceat((gs > t).astype(np.int64), starts, axis=0)

    # -- derived quantities ---------------------------------------------------------------------------
    @property
    def total(self) -> int:
        return int(self.count.sum())

    def overall(self) -> tuple[np.ndarray, np.ndarray]:
        """All-class mean [C] and sum of squared deviations [C] (exact merge of the class moments)."""
        n = self.total
        if n == 0:
            nan = np.full(self.channels, np.nan)
            return nan, nan
        w = self.count.astype(np.float64)[:, None]
        mean = (w * self.mean).sum(0) / n
        m2 = self.m2.sum(0) + (w * (self.mean - mean) ** 2).sum(0)
        return mean, m2

    def between_within(self) -> tuple[np.ndarray, np.ndarray]:
        """Per channel: between-class sum of squares sum_k n_k (m_kc - m_c)^2 and within-class sum of
        squares sum_k M2_kc. They add up to the total sum of squares."""
        mean, _ = self.overall()
        w = self.count.astype(np.float64)[:, None]
        present = self.count > 0
        between = (w[present] * (self.mean[present] - mean) ** 2).sum(0)
        within = self.m2.sum(0)
        return between, within


class ExcitationStats:
    """Recorded excitation statistics for some SE blocks of one model over some labelled images."""

    def __init__(self, blocks: dict[str, BlockStats], classes: Sequence[str]):
        self._blocks = dict(sorted(blocks.items(), key=lambda kv: kv[1].depth_index))
        self.classes = list(classes)
        for b in self._blocks.values():
            b.grow(len(self.classes))

    # -- lookup ---------------------------------------------------------------------------------------
    @property
    def blocks(self) -> list[str]:
        """Recorded block tags in depth order."""
        return list(self._blocks)

    def block(self, tag: str) -> BlockStats:
        if tag not in self._blocks:
            raise UserError(f"no excitation recorded for block {tag!r}", field="block",
                            fix=f"recorded: {', '.join(self._blocks)}")
        return self._blocks[tag]

    def class_index(self, cls: ClassKey) -> int:
        if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool):
            if 0 <= int(cls) < len(self.classes):
                return int(cls)
        elif cls in self.classes:
            return self.classes.index(cls)
        raise UserError(f"unknown class {cls!r}", field="class",
                        fix=f"known: {', '.join(self.classes)}")

    def counts(self, block: Optional[str] = None) -> dict[str, int]:
        """Images recorded per class (from the first block, or `block`)."""
        b = self.block(block) if block else next(iter(self._blocks.values()))
        return {c: int(n) for c, n in zip(self.classes, b.count)}

    def present_classes(self) -> list[str]:
        return [c for c, n in self.counts().items() if n > 0]

    # -- vectors --------------------------------------------------------------------------------------
    def per_class_mean(self, block: str, cls: ClassKey) -> np.ndarray:
        """Mean gate value per channel over the images of class `cls` ([C]; NaN if none were seen)."""
        b, k = self.block(block), self.class_index(cls)
        return b.mean[k].copy() if b.count[k] else np.full(b.channels, np.nan)

    def per_class_std(self, block: str, cls: ClassKey) -> np.ndarray:
        """Population std (ddof=0) per channel within class `cls` ([C])."""
        b, k = self.block(block), self.class_index(cls)
        return np.sqrt(b.m2[k] / b.count[k]) if b.count[k] else np.full(b.channels, np.nan)

    def overall_mean(self, block: str) -> np.ndarray:
        """Mean gate value per channel over all recorded images ([C])."""
        return self.block(block).overall()[0]

    def overall_std(self, block: str) -> np.ndarray:
        b = self.block(block)
        _, m2 = b.overall()
        return np.sqrt(m2 / b.total) if b.total else m2

    # -- scalars --------------------------------------------------------------------------------------
    def class_specificity(self, block: str, adjusted: bool = False) -> float:
        """Share of the gate-value variance of `block` that lies between classes, pooled over channels.

        With x_ic the gate value of image i on channel c (H, W averaged for NoSqueeze), n_k images in
        class k, m_kc the class means, m_c the all-image mean and N = sum_k n_k::

            B = sum_c sum_k n_k (m_kc - m_c)^2          (between-class sum of squares)
            W = sum_c sum_k sum_{i in k} (x_ic - m_kc)^2 (within-class sum of squares)
            T = sum_c sum_i (x_ic - m_c)^2 = B + W      (total sum of squares)
            specificity = B / T                         (0 <= specificity <= 1)

        i.e. the correlation ratio eta^2 of channel value on class, with the channels' sums of squares
        pooled (not a mean of per-channel ratios, so near-constant saturated channels cannot dominate
        through 0/0). It is 0 when every class has the same channel means (class-agnostic excitation,
        the paper's early blocks), 1 when every image equals its class mean (excitation fully determined
        by the class), and grows as the class means move apart relative to the spread within classes.
        Only classes with images count (K of them); returns 0.0 when T == 0 (all values identical) and
        NaN when no images were recorded.

        Small samples inflate it: with labels unrelated to the gates its expectation is about
        (K - 1) / (N - 1) (:meth:`chance_specificity`). ``adjusted=True`` gives the pooled omega^2,
        (B - (K-1) W/(N-K)) / (T + W/(N-K)), which is about 0 at chance (and may be negative; NaN when
        N <= K).
        """
        b = self.block(block)
        if b.total == 0:
            return math.nan
        between, within = b.between_within()
        bsum, wsum = float(between.sum()), float(within.sum())
        total = bsum + wsum
        if adjusted:
            k, n = int((b.count > 0).sum()), b.total
            if n <= k:
                return math.nan
            msw = wsum / (n - k)
            denom = total + msw
            return (bsum - (k - 1) * msw) / denom if denom > 0 else 0.0
        return bsum / total if total > 0 else 0.0

    def chance_specificity(self, block: str) -> float:
        """(K - 1) / (N - 1): about what :meth:`class_specificity` gives when the labels carry no
        information (K classes with images, N images); NaN for N < 2."""
        b = self.block(block)
        k, n = int((b.count > 0).sum()), b.total
        return (k - 1) / (n - 1) if n >= 2 else math.nan

    def saturation_share(self, block: str, threshold: float = DEFAULT_THRESHOLD,
                         cls: Optional[ClassKey] = None) -> float:
        """Share of (image, channel) gate values of `block` above `threshold` (all classes, or `cls`).
        Only thresholds given to the recorder are available."""
        b = self.block(block)
        t = float(threshold)
        if t not in b.above:
            raise UserError(f"saturation above {threshold} was not recorded", field="threshold",
                            fix=f"recorded: {', '.join(map(str, b.above)) or 'none'}; pass "
                                f"thresholds=(..., {threshold}) to the recorder")
        if cls is None:
            n, hits = b.total, int(b.above[t].sum())
        else:
            k = self.class_index(cls)
            n, hits = int(b.count[k]), int(b.above[t][k].sum())
        return hits / (n * b.channels) if n else math.nan

    def mean_gate(self, block: str) -> float:
        """Mean gate value over all images and channels."""
        return float(np.mean(self.overall_mean(block)))

    @property
    def thresholds(self) -> list[float]:
        first = next(iter(self._blocks.values()), None)
        return sorted(first.above) if first else []

    # -- frames ---------------------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """Tidy frame: one row per (block, class, channel), class ``'all'`` for all classes together.

        Columns: block, depth_index, class, channel, mean, std (population), count (images), and
        ``n_gt_<t>`` (images whose gate value on that channel exceeds threshold t) per recorded threshold.
        Classes without images are left out.
        """
        parts = []
        for tag, b in self._blocks.items():
            ch = np.arange(b.channels)
            rows = [(name, k) for k, name in enumerate(self.classes) if b.count[k] > 0]
            for name, k in rows:
                part = {"block": tag, "depth_index": b.depth_index, "class": name, "channel": ch,
                        "mean": b.mean[k], "std": np.sqrt(b.m2[k] / b.count[k]), "count": int(b.count[k])}
                for t, a in b.above.items():
                    part[f"{_SAT_PREFIX}{t:g}"] = a[k]
                parts.append(pd.DataFrame(part))
            if b.total:
                mean, m2 = b.overall()
                part = {"block": tag, "depth_index": b.depth_index, "class": ALL, "channel": ch,
                        "mean": mean, "std": np.sqrt(m2 / b.total), "count": b.total}
                for t, a in b.above.items():
                    part[f"{_SAT_PREFIX}{t:g}"] = a.sum(0)
                parts.append(pd.DataFrame(part))
        if not parts:
            return pd.DataFrame(columns=TIDY_COLUMNS)
        return pd.concat(parts, ignore_index=True)

    @classmethod
    def from_frame(cls, df: pd.DataFrame, classes: Optional[Sequence[str]] = None) -> "ExcitationStats":
        """Rebuild from :meth:`to_frame` (or its CSV): per-class rows are the data, ``'all'`` rows are
        derived again. `classes` fixes the class order (default: order of first appearance)."""
        missing = [c for c in TIDY_COLUMNS if c not in df.columns]
        if missing:
            raise UserError(f"excitation table lacks column(s) {missing}", field="columns",
                            fix=f"expected: {', '.join(TIDY_COLUMNS)}")
        df = df[df["class"].astype(str) != ALL]
        names = list(classes) if classes is not None else list(dict.fromkeys(df["class"].astype(str)))
        sat_cols = [c for c in df.columns if c.startswith(_SAT_PREFIX)]
        blocks: dict[str, BlockStats] = {}
        for tag, g in df.groupby("block", sort=False):
            g = g.sort_values("channel")
            channels = int(g["channel"].max()) + 1
            b = BlockStats.empty(str(tag), int(g["depth_index"].iloc[0]), channels, len(names),
                                 [float(c[len(_SAT_PREFIX):]) for c in sat_cols])
            for name, gc in g.groupby("class", sort=False):
                k = names.index(str(name))
                ch = gc["channel"].to_numpy()
                n = int(gc["count"].iloc[0])
                b.count[k] = n
                b.mean[k, ch] = gc["mean"].to_numpy()
                b.m2[k, ch] = gc["std"].to_numpy() ** 2 * n
                for c in sat_cols:
                    b.above[float(c[len(_SAT_PREFIX):])][k, ch] = gc[c].to_numpy()
            blocks[str(tag)] = b
        return cls(blocks, names)

    @classmethod
    def read_csv(cls, path: Union[str, Path], classes: Optional[Sequence[str]] = None) -> "ExcitationStats":
        return cls.from_frame(pd.read_csv(path, keep_default_na=False, na_values=[""]), classes)

    def summary_frame(self, threshold: float = DEFAULT_THRESHOLD) -> pd.DataFrame:
        """One row per block: block, depth_index, channels, images, classes (with images), specificity
        (:meth:`class_specificity`), specificity_adj (its omega^2 form), specificity_chance
        (:meth:`chance_specificity`), saturation_share (above `threshold`), mean_gate, std_gate
        (population std over all images and channels)."""
        rows = []
        for tag, b in self._blocks.items():
            mean, m2 = b.overall()
            n = b.total
            grand = float(mean.mean()) if n else math.nan
            # total sum of squares about the grand mean = per-channel SS + n * spread of channel means
            ss = float(m2.sum() + n * ((mean - grand) ** 2).sum()) if n else math.nan
            rows.append({
                "block": tag, "depth_index": b.depth_index, "channels": b.channels, "images": n,
                "classes": int((b.count > 0).sum()),
                "specificity": self.class_specificity(tag),
                "specificity_adj": self.class_specificity(tag, adjusted=True),
                "specificity_chance": self.chance_specificity(tag),
                "saturation_share": (self.saturation_share(tag, threshold)
                                     if float(threshold) in b.above else math.nan),
                "mean_gate": grand,
                "std_gate": math.sqrt(ss / (n * b.channels)) if n else math.nan,
            })
        return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)

    def to_csv(self, path: Union[str, Path]) -> Path:
        return write_csv(self.to_frame(), path)

    def __repr__(self) -> str:
        return (f"ExcitationStats(blocks={self.blocks}, classes={len(self.classes)}, "
                f"images={sum(self.counts().values()) if self._blocks else 0})")


# ---------------------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------------------

class ExcitationRecorder:
    """Context manager that records the gate values of chosen SE blocks, per class, while a model runs.

    ::

        with ExcitationRecorder(model, blocks=["SE_2_3", "SE_3_1"], classes=names) as rec:
            for x, y in batches:
                rec.set_labels(y)
                model(x)
        stats = rec.stats()

    `blocks`: None / ``'paper'`` (:func:`paper_blocks`), ``'all'``, or tags; unknown tags raise UserError.
    `classes`: names of the label indices (None: labels are named by their index, as seen).
    `thresholds`: saturation thresholds whose exceedances are counted (default 0.95).

    Hooks sit on each SE module's ``.gate`` and only read its output, so the model computes exactly what
    it computes without the recorder. They are removed when the context exits, also on an exception.
    Each forward needs its own ``set_labels(y)``; a block that fires twice for one set of labels (a
    forgotten ``set_labels``, or a module reused within one forward) raises RuntimeError.
    """

    def __init__(self, model: nn.Module, blocks: BlockSpec = None, classes: Optional[Sequence[str]] = None,
                 thresholds: Sequence[float] = (DEFAULT_THRESHOLD,)):
        self.model = model
        modules = se_modules(model)
        self.tags = resolve_blocks(list(modules), blocks)
        order = {t: i for i, t in enumerate(modules)}
        self.modules: dict[str, SqueezeExcite] = {t: modules[t] for t in self.tags}
        self.classes: Optional[list[str]] = list(classes) if classes is not None else None
        if self.classes is not None and ALL in self.classes:
            raise UserError(f"a class may not be named {ALL!r} (it names the all-classes aggregate)",
                            field="classes")
        self.thresholds = tuple(float(t) for t in thresholds)
        k = len(self.classes) if self.classes is not None else 0
        self._stats = {t: BlockStats.empty(t, order[t], m.channels, k, self.thresholds)
                       for t, m in self.modules.items()}
        self._handles: list = []
        self._labels: Optional[torch.Tensor] = None
        self._batch = 0
        self._seen: dict[str, int] = {}

    # -- context --------------------------------------------------------------------------------------
    def __enter__(self) -> "ExcitationRecorder":
        if self._handles:
            raise RuntimeError("ExcitationRecorder is already active")
        try:
            for tag, m in self.modules.items():
                self._handles.append(m.gate.register_forward_hook(self._hook(tag)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    # -- labels and hooks -----------------------------------------------------------------------------
    def set_labels(self, y) -> None:
        """Labels of the next forward's batch: integer class indices, shape [N]."""
        y = torch.as_tensor(y).detach().to("cpu")
        if y.dim() != 1 or y.dtype.is_floating_point or y.dtype == torch.bool:
            raise ValueError(f"labels must be a 1-D integer tensor, got {tuple(y.shape)} {y.dtype}")
        y = y.to(torch.int64)
        if len(y) and int(y.min()) < 0:
            raise ValueError("labels must be >= 0")
        if len(y) and self.classes is not None and int(y.max()) >= len(self.classes):
            raise ValueError(f"label {int(y.max())} has no name: {len(self.classes)} classes given")
        self._labels = y
        self._batch += 1

    def _hook(self, tag: str):
        def hook(module, inputs, output):
            if self._labels is None:
                raise RuntimeError("ExcitationRecorder: call set_labels(y) before each forward")
            if self._seen.get(tag) == self._batch:
                raise RuntimeError(f"ExcitationRecorder: {tag} ran twice for one set_labels(); call "
                                   "set_labels(y) before every forward")
            self._seen[tag] = self._batch
            g = output.detach()
            if g.dim() == 4:  # NoSqueeze: one gate per position -> one value per image and channel
                g = g.to(torch.float64).mean((2, 3))
            if g.dim() != 2 or g.shape[0] != len(self._labels):
                raise RuntimeError(f"ExcitationRecorder: {tag} gate has shape {tuple(output.shape)} but "
                                   f"{len(self._labels)} labels were set")
            b = self._stats[tag]
            if self.classes is None:
                b.grow(int(self._labels.max()) + 1 if len(self._labels) else 0)
            b.update(g, self._labels)
        return hook

    def stats(self) -> ExcitationStats:
        """A snapshot of what has been recorded so far."""
        k = max((len(b.count) for b in self._stats.values()), default=0)
        names = self.classes if self.classes is not None else [str(i) for i in range(k)]
        copies = {t: BlockStats(b.tag, b.depth_index, b.channels, b.count.copy(), b.mean.copy(),
                                b.m2.copy(), {th: a.copy() for th, a in b.above.items()})
                  for t, b in self._stats.items()}
        return ExcitationStats(copies, names)


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def record(model: nn.Module, batches: Iterable, *, blocks: BlockSpec = None,
           classes: Optional[Sequence[str]] = None, thresholds: Sequence[float] = (DEFAULT_THRESHOLD,),
           device: Union[str, torch.device, None] = None, max_images: Optional[int] = None) -> ExcitationStats:
    """Run (x, y) `batches` through `model` in eval mode under ``torch.inference_mode`` and return the
    excitation statistics of `blocks`. Inputs go to `device` (default: the model's); the training flags
    of every submodule are restored afterwards. `max_images` stops after that many images (the last
    batch is cut)."""
    device = torch.device(device) if device is not None else _model_device(model)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    seen = 0
    try:
        with ExcitationRecorder(model, blocks, classes, thresholds) as rec, torch.inference_mode():
            for x, y in batches:
                if max_images is not None:
                    if seen >= max_images:
                        break
                    x, y = x[: max_images - seen], y[: max_images - seen]
                rec.set_labels(y)
                model(x.to(device, non_blocking=True))
                seen += len(y)
        return rec.stats()
    finally:
        for m, flag in modes.items():
            m.training = flag


# ---------------------------------------------------------------------------------------------------
# Class choice and the whole study
# ---------------------------------------------------------------------------------------------------

# Stand-ins for the paper's goldfish / pug / plane / cliff (unalike in look and meaning), by dataset
# naming. The first two of each are the within-class pair (the paper's goldfish and plane).
PREFERRED_CLASSES: tuple[tuple[str, ...], ...] = (
    ("goldfish", "airliner", "pug", "cliff"),                 # ImageNet (readable names)
    ("n01443537", "n02690373", "n02110958", "n09246464"),     # ImageNet (WordNet ids)
    ("frog", "airplane", "dog", "truck"),                     # CIFAR-10
)


def default_show_classes(classes: Sequence[str], present: Optional[Sequence[str]] = None,
                         k: int = 4) -> list[str]:
    """Up to `k` unalike classes to show: the paper's four (or CIFAR-10 stand-ins: frog, airplane, dog,
    truck) where the names exist, else `k` classes evenly spaced over the label range. Only classes in
    `present` (those with images) are chosen when it is given."""
    pool = [c for c in classes if present is None or c in present]
    for pref in PREFERRED_CLASSES:
        hit = [c for c in pref if c in pool]
        if len(hit) >= min(k, len(pref)):
            return hit[:k]
    if len(pool) <= k:
        return list(pool)
    idx = sorted({round(i * (len(pool) - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]
    return [pool[i] for i in idx]


def write_csv(df: pd.DataFrame, path: Union[str, Path]) -> Path:
    """Write a frame as CSV atomically (the store's temp-file-then-rename)."""
    with atomic_open(path, "w") as f:
        df.to_csv(f, index=False)
    return Path(path)


__all__ = [
    "ALL", "DEFAULT_THRESHOLD", "PREFERRED_CLASSES", "SUMMARY_COLUMNS", "TIDY_COLUMNS", "BlockStats",
    "ExcitationRecorder", "ExcitationStats", "default_show_classes", "evenly_spaced",
    "paper_blocks", "parse_tag", "record", "resolve_blocks", "write_csv",
]
