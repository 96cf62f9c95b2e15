"""The paper's excitation study: `analyze` for a model and batches, `analyze_run` for a trained run from
the store (`sebench analyze`). It joins the two floors below it: statistics (excitation.py) and the
figures that draw them (figures.py).

`analyze_run` rebuilds the run's model exactly as fit did (:func:`sebench.engine.builders.build_run_model`), loads
the final checkpoint (``ckpt/last.pt``), builds the run's test split with its evaluation transform
(:func:`sebench.data.build_loaders`), and hands both to :func:`analyze`, which writes the CSVs and the four
figures into ``<run_dir>/analysis/``. In the same pass over the test split
it measures the top-1 error and compares it with the run's summary: equal numbers prove that the
weights analysed are the ones the summary reports on. ``analysis.json`` records that check with the
run's identity, the blocks and classes shown and the data label.
"""

from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
from torch import nn

from sebench.analysis.excitation import (DEFAULT_THRESHOLD, BlockSpec, ExcitationStats, default_show_classes,
                                         record, resolve_blocks, write_csv)
from sebench.errors import UserError
from sebench.layers.se import se_modules
from sebench.progress import Board
from sebench.store import RunDir, hardware_text

PathLike = Union[str, Path]
OUT_DIR = "analysis"
REPORT = "analysis.json"
# The test error measured here may differ from the run's own evaluation only by float noise (thread
# count, fused vs reference SE path, AMP): more than this many points means other weights or other data.
ERR_TOLERANCE = 0.5


# The notebook's default run: profile groups in order of preference (runs within a group compete on test
# error, e.g. fp32 and bf16 twins), and the data set whose runs compete (the paper's study is one data set's).
DEFAULT_PROFILES = "full40,full40_bf16;quick"
DEFAULT_DATASET = "CIFAR-10"


def same_dataset(label: str, name: str) -> bool:
    """A run's data label is the data set `name` or a variant of it ('CIFAR-10 (JPEG q75 mirror)',
    'CIFAR-100 [train 10000, test 10000]'); 'CIFAR-100' is never 'CIFAR-10'."""
    return label == name or label.startswith(name + " ")


def default_run(results: PathLike, profiles: str = DEFAULT_PROFILES, dataset: str = DEFAULT_DATASET) -> Path:
    """The best finished SE run of `dataset` (every data set when empty) in the first profile group that has
    one: `profiles` lists groups joined by ';', profiles within a group by ','. Runs that can be analysed
    here (a checkpoint, or an earlier analysis) are preferred; otherwise the best at all, whose missing
    checkpoint then yields the command that trains it again. UserError when no group has one."""
    from sebench.engine.checkpoint import LAST
    from sebench.store import iter_summaries

    results = Path(results)
    groups = [[p.strip() for p in g.split(",") if p.strip()] for g in profiles.split(";")]
    found = [(d, s) for d, s in iter_summaries(results) if s.finished and s.se != "none"
             and (not dataset or same_dataset(s.dataset, dataset))]
    for group in groups:
        runs = [(d, s) for d, s in found if s.profile in group]
        if runs:
            usable = [r for r in runs if (RunDir(r[0]).ckpt / LAST).exists() or (r[0] / OUT_DIR / REPORT).exists()]
            return min(usable or runs, key=lambda r: r[1].final_test_top1_err)[0]
    of = f" of {dataset}" if dataset else ""
    raise UserError(f"no finished SE run{of} in the profiles {profiles!r}", where=str(results / "runs"),
                    fix="set SEBENCH_ANALYSIS_RUN to a run folder, or SEBENCH_ANALYSIS_PROFILES / "
                        "SEBENCH_ANALYSIS_DATASET to a profile and data set that have finished SE runs")


@dataclass(frozen=True)
class RunAnalysis:
    """What analyze_run wrote and measured. `paths`: CSVs, figures and analysis.json by name."""

    paths: dict[str, Path]
    run_id: str
    label: str
    blocks: list[str]
    classes: list[str]
    images: int
    test_top1_err: float
    summary_top1_err: Optional[float]

    @property
    def checkpoint_matches(self) -> bool:
        """The measured test error equals the summary's (within ERR_TOLERANCE points)."""
        return (self.summary_top1_err is not None
                and abs(self.test_top1_err - self.summary_top1_err) <= ERR_TOLERANCE)


def analyze(model: nn.Module, batches: Iterable, classes: Sequence[str], out_dir: Union[str, Path], *,
            blocks: BlockSpec = None, depth_blocks: BlockSpec = "all",
            show_classes: Optional[Sequence[str]] = None, within_classes: Optional[Sequence[str]] = None,
            label: str = "", channels: int = 50, threshold: float = DEFAULT_THRESHOLD,
            device: Union[str, torch.device, None] = None, max_images: Optional[int] = None,
            stats: Optional[ExcitationStats] = None) -> dict[str, Path]:
    """The paper's excitation study for one model, written into `out_dir`.

    Records every block in ``blocks ∪ depth_blocks`` over `batches` ((x, y) with y indexing `classes`),
    then writes:

    * ``excitation_stats.csv``   tidy per (block, class, channel) table (:meth:`ExcitationStats.to_frame`)
    * ``excitation_summary.csv`` per block: depth, specificity, saturation share, mean gate
    * ``excitation_class_means.png``   (a) mean excitation of the first `channels` channels per class
                                           and over all classes, one panel per block in `blocks`
    * ``excitation_within_class.png``  (b) mean +- std within the two `within_classes`
    * ``excitation_specificity.png``   (c) class specificity vs depth over `depth_blocks`
    * ``excitation_saturation.png``    (d) share of gate values > `threshold` vs depth

    `blocks`: the panels of (a) and (b), default the paper's selection (:func:`~sebench.analysis.excitation.paper_blocks`);
    `depth_blocks`: the x axis of (c) and (d), default every SE block. `show_classes` (<= 4 shown
    best) default :func:`~sebench.analysis.excitation.default_show_classes`; `within_classes` default the first two of those.
    `label` (data variant, model, run id, profile) goes into every figure's title. Pass `stats` to plot
    recorded statistics again without running the model. Returns {name: path}.
    """
    from sebench.analysis import figures  # matplotlib only when plotting

    out = Path(out_dir)
    classes = list(classes)
    if stats is None:
        all_tags = list(se_modules(model))
        panel = resolve_blocks(all_tags, blocks)
        depth = resolve_blocks(all_tags, depth_blocks)
        wanted = set(panel) | set(depth)
        stats = record(model, batches, blocks=[t for t in all_tags if t in wanted], classes=classes,
                       thresholds=sorted({DEFAULT_THRESHOLD, float(threshold)}), device=device,
                       max_images=max_images)
    else:
        panel = resolve_blocks(stats.blocks, blocks)
        depth = resolve_blocks(stats.blocks, depth_blocks)
    present = stats.present_classes()
    if not present:
        raise UserError("no images were recorded (the batches were empty)", field="batches")
    for name, chosen in (("show_classes", show_classes), ("within_classes", within_classes)):
        if chosen is not None:
            unknown = [c for c in chosen if c not in stats.classes]
            if unknown:
                raise UserError(f"unknown class(es) {unknown}", field=name,
                                fix=f"known: {', '.join(stats.classes)}")
            absent = [c for c in chosen if c not in present]
            if absent:
                warnings.warn(f"{name}: no images of {absent} were recorded; they are left out",
                              stacklevel=2)
    show = ([c for c in show_classes if c in present] if show_classes is not None
            else default_show_classes(stats.classes, present))
    within = ([c for c in within_classes if c in present] if within_classes is not None
              else show[:2])

    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["stats_csv"] = stats.to_csv(out / "excitation_stats.csv")
    summary = stats.summary_frame(threshold)
    summary = summary[summary["block"].isin(depth)].reset_index(drop=True)
    paths["summary_csv"] = write_csv(summary, out / "excitation_summary.csv")
    paths["class_means_png"] = figures.plot_class_means(
        stats, panel, show, out / "excitation_class_means.png", channels=channels, caption=label)
    paths["within_class_png"] = figures.plot_within_class(
        stats, panel, within, out / "excitation_within_class.png", channels=channels, caption=label)
    paths["specificity_png"] = figures.plot_specificity(
        stats, depth, out / "excitation_specificity.png", caption=label, highlight=panel)
    paths["saturation_png"] = figures.plot_saturation(
        stats, depth, out / "excitation_saturation.png", threshold=threshold, caption=label,
        highlight=panel)
    return paths


def _checkpoint(run_dir: Path, rerun: str) -> Path:
    """ckpt/last.pt of the run, or the UserError that says how to get it back."""
    from sebench.engine import checkpoint

    path = RunDir(run_dir).ckpt / checkpoint.LAST
    if not path.exists():  # checkpoints are git-ignored: a run from the committed store has none
        raise UserError("the run has no checkpoint to analyse", where=str(path),
                        fix=f"train it again here: delete {run_dir / 'summary.json'} and run {rerun}")
    return path


def preflight(run_dir: PathLike, blocks=None) -> None:
    """The checks analyze_run makes before its first slow step (a finished run, an SE model with these blocks,
    a final checkpoint on disk), for a batch of runs: all are checked before any is analysed."""
    from sebench.data import get_info
    from sebench.engine.builders import build_run_model
    from sebench.store import read_finished_run

    cfg, _, _, rerun = read_finished_run(run_dir)
    resolve_blocks(build_run_model(cfg, cfg.model.num_classes or get_info(cfg.data.name).num_classes or 1), blocks)
    _checkpoint(Path(run_dir), rerun)


def _load_weights(run_dir: Path, run_id: str, epochs: int, rerun: str) -> dict:
    """The final epoch's model state from ckpt/last.pt (prev.pt is one epoch older: never used here)."""
    from sebench.engine import checkpoint

    path = _checkpoint(run_dir, rerun)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the UserError below says it better
        state = checkpoint.read(path)
    if state is None:
        raise UserError("the checkpoint is unreadable", where=str(path),
                        fix=f"train the run again: delete {run_dir / 'summary.json'} and {path.parent}, "
                            f"then run {rerun}")
    if state["run_id"] != run_id:
        raise UserError(f"the checkpoint belongs to run {state['run_id']!r}, not {run_id!r}", where=str(path))
    if state["epoch"] != epochs:
        raise UserError(f"the checkpoint is of epoch {state['epoch']}, not the final epoch {epochs}",
                        where=str(path), fix=f"finish the run: {rerun}")
    return state["model"]


def resolve_classes(classes: Optional[Sequence[Union[int, str]]], names: Sequence[str]) -> Optional[list[str]]:
    """Class names from names or indices (``'frog'``, ``6``, ``'6'``); None stays None (the default)."""
    if classes is None:
        return None
    out = []
    for c in classes:
        text = str(c).strip()
        if text in names:
            out.append(text)
        elif text.isdigit() and int(text) < len(names):
            out.append(names[int(text)])
        else:
            raise UserError(f"unknown class {c!r}", field="classes",
                            fix=f"use names or indices 0-{len(names) - 1}: {', '.join(names)}")
    if len(set(out)) != len(out) or not out:
        raise UserError(f"give distinct classes, at least one (got {list(classes)})", field="classes")
    return out


class _Scored:
    """Wraps (x, y) batches and counts the model's top-1 hits during analyze's own pass, so the test
    error and the excitations come from one forward of every image."""

    def __init__(self, batches, model: torch.nn.Module, progress: bool):
        self.batches, self.progress = batches, progress
        self.hits = self.n = 0
        self._y: Optional[torch.Tensor] = None
        self._handle = model.register_forward_hook(self._hook)

    def __iter__(self):
        with Board("recording", len(self.batches), unit="batches", enabled=self.progress) as board:
            for x, y in self.batches:
                self._y = y
                yield x, y
                board.advance(status=f"{self.n} images, top-1 error so far {self.top1_err:.2f}%")

    def _hook(self, module, inputs, output):
        y = self._y[: len(output)].to(output.device)
        self.hits += int((output.argmax(1) == y).sum())
        self.n += len(output)

    @property
    def top1_err(self) -> float:
        return 100.0 * (self.n - self.hits) / self.n if self.n else math.nan

    def remove(self) -> None:
        self._handle.remove()


def caption(label: str, cfg, run_id: str, summary=None) -> str:
    """The lines every figure carries: data variant, model and SE settings, run id, epochs, profile; and,
    from the run's summary, the hardware and precision it trained on."""
    se = (cfg.model.se.short() if cfg.model.se is not None else
          f"SE surgery (min {cfg.model.surgery.min_channels} ch)" if cfg.model.surgery is not None else "no SE")
    text = (f"{label} | {cfg.model.name}, {se} | run {run_id} ({cfg.experiment}, seed {cfg.seed}, "
            f"{cfg.epochs} epoch{'s' * (cfg.epochs != 1)}, {cfg.profile} profile)")
    if summary is not None and summary.device_name:
        amp = summary.amp
        precision = f", {amp} autocast" if amp not in (None, "off") else ""
        where = hardware_text(summary.device_name, summary.device, summary.threads)
        text += f"\ntrained on {where}{precision}"
    return text


def analyze_run(run_dir: PathLike, blocks=None, classes: Optional[Sequence[Union[int, str]]] = None,
                out: Optional[PathLike] = None, *, data_path: Optional[str] = None,
                cache_dir: Optional[str] = None, device: str = "auto", threads: Optional[int] = None,
                batch_size: Optional[int] = None, channels: int = 50, progress: bool = True) -> RunAnalysis:
    """The paper's excitation study for a finished run of the store; outputs in ``<run_dir>/analysis``.

    `blocks`: the panels of figures (a)/(b): None or 'paper' (the paper's selection rule), 'all', or SE
    tags; (c)/(d) always span every SE block. `classes`: the classes shown, names or indices (default:
    frog, airplane, dog, truck on CIFAR-10). `data_path`/`cache_dir` default to the run's execution
    settings (as `sebench run` would use them); `device` 'auto' (not the run's: it may have trained on
    a GPU this machine lacks); `threads` CPU threads (default all); `batch_size` the evaluation batch
    (default the run's). Mistakes (bad block or class, unfinished run, missing checkpoint) raise
    UserError before anything is written.
    """
    from sebench.data import build_loaders, get_info
    from sebench.engine.env import available_cpus, now_iso
    from sebench.engine.builders import build_run_model, resolve_device
    from sebench.store import atomic_write_json, read_finished_run

    run_dir = Path(run_dir)
    cfg, run_id, summary, rerun = read_finished_run(run_dir)

    def say(msg: str) -> None:
        if progress:
            print(f"[{run_id}] {msg}", file=sys.stderr, flush=True)

    # Fail fast on a model without SE or a bad block tag: the classifier's width does not change the tags.
    info = get_info(cfg.data.name)
    guess = cfg.model.num_classes or info.num_classes or 1
    model = build_run_model(cfg, guess)
    panel = resolve_blocks(model, blocks)
    state = _load_weights(run_dir, run_id, cfg.epochs, rerun)
    out_dir = Path(out) if out is not None else run_dir / OUT_DIR

    dev = resolve_device(device)
    ex = cfg.execution
    # Threads only: fit's determinism switches change nothing in an eval-mode forward (and importing
    # what they need costs seconds).
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(threads or available_cpus())
    try:
        say(f"loading the test split of {cfg.data.name}")
        loaders = build_loaders(cfg.data, batch_size=cfg.batch_size,
                                eval_batch_size=batch_size or cfg.eval_batch_size, device=dev, seed=cfg.seed,
                                path=data_path or ex.data_path, cache_dir=cache_dir or ex.cache_dir,
                                num_workers=ex.num_workers)
        shown = resolve_classes(classes, loaders.classes) or default_show_classes(loaders.classes)
        if (cfg.model.num_classes or loaders.num_classes) != guess:
            model = build_run_model(cfg, loaders.num_classes)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise UserError(f"the checkpoint does not fit the model its config builds "
                            f"({str(exc).splitlines()[0]})", where=str(RunDir(run_dir).ckpt),
                            fix=f"train the run again with this code: {rerun}") from None
        model = model.to(dev)
        if loaders.label != summary.dataset:
            warnings.warn(f"the run was trained on {summary.dataset!r}, the data found here is "
                          f"{loaders.label!r}", RuntimeWarning, stacklevel=2)
        label = caption(loaders.label, cfg, run_id, summary)
        say(f"recording excitations of {len(panel)} panel blocks (and every SE block for the depth "
            f"plots) over {loaders.num_test} test images on {dev}")
        scored = _Scored(loaders.test, model, progress)
        try:
            paths = analyze(model, scored, loaders.classes, out_dir, blocks=panel, show_classes=shown,
                            label=label, channels=channels, device=dev)
        finally:
            scored.remove()
    finally:
        torch.set_num_threads(saved_threads)

    paths["report_json"] = out_dir / REPORT
    result = RunAnalysis(paths=paths, run_id=run_id, label=label, blocks=panel, classes=shown, images=scored.n,
                         test_top1_err=scored.top1_err, summary_top1_err=summary.final_test_top1_err)
    if not result.checkpoint_matches:
        warnings.warn(f"test top-1 error measured now {scored.top1_err:.2f}% differs from the run's "
                      f"{result.summary_top1_err}% by more than {ERR_TOLERANCE} points: the weights or data "
                      "analysed may not be the ones the summary reports on", RuntimeWarning, stacklevel=2)
    atomic_write_json(paths["report_json"], {
        "run_id": run_id, "experiment": cfg.experiment, "profile": cfg.profile, "model": cfg.model.name,
        "dataset": loaders.label, "caption": label, "epochs": cfg.epochs, "blocks": panel,
        "classes": shown, "images": scored.n, "test_top1_err": scored.top1_err,
        "summary_test_top1_err": result.summary_top1_err, "checkpoint_matches": result.checkpoint_matches,
        "tolerance_points": ERR_TOLERANCE, "device": str(dev), "torch": torch.__version__,
        "time": now_iso(), "files": {k: p.name for k, p in paths.items()}})
    return result
