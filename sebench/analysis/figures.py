"""The excitation-distribution figures (Hu et al., "Role of Excitation"), from :class:`ExcitationStats`.

(a) :func:`plot_class_means`   mean excitation per channel for a few classes and for all classes, one panel
                               per block (the paper's Fig. 6/7: 50 channels, blocks at increasing depth);
(b) :func:`plot_within_class`  within-class mean +- std (shaded) for two classes at the same blocks;
(c) :func:`plot_specificity`   class specificity (between-class share of variance) vs block depth;
(d) :func:`plot_saturation`    share of gate values above a threshold vs block depth.

Every figure takes a `caption` (data variant, model, run id, profile) that goes into its title, and every
function returns the path it wrote (PNG, written atomically). Figures are drawn on matplotlib's Agg canvas
directly (no pyplot, so no global backend or figure state is touched).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sebench.store import atomic_open
from sebench.analysis.excitation import DEFAULT_THRESHOLD, ExcitationStats, parse_tag

PathLike = Union[str, Path]
DPI = 130
CLASS_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
ALL_STYLE = dict(color="black", linestyle="--", linewidth=1.6)


def _title(what: str, caption: str) -> str:
    return f"{what}\n{caption}" if caption else what


def _save(fig: Figure, path: PathLike) -> Path:
    FigureCanvasAgg(fig)
    with atomic_open(path, "wb") as f:  # the store's temp-file-then-rename
        fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight")
    return Path(path)


def _grid(n: int, ncols: Optional[int]) -> tuple[int, int]:
    ncols = ncols or (1 if n == 1 else 2 if n in (2, 4) else 3)
    return math.ceil(n / ncols), ncols


def _unit_ylim(ax, values: Sequence[np.ndarray]) -> None:
    """Gate values of a sigmoid lie in [0, 1]: show that full range (as the paper does) when they do."""
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    if finite.size and finite.min() >= -1e-9 and finite.max() <= 1 + 1e-9:
        ax.set_ylim(-0.03, 1.03)


def _panels(blocks: Sequence[str], ncols: Optional[int], panel_size=(5.0, 3.1)):
    rows, cols = _grid(len(blocks), ncols)
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows + 1.1), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False, sharex=False)
    for ax in axes.flat[len(blocks):]:
        ax.set_visible(False)
    return fig, axes.flat


def _block_title(stats: ExcitationStats, tag: str, shown: int) -> str:
    b = stats.block(tag)
    return (f"{tag}  (channels 0-{shown - 1} of {b.channels};  "
            f"specificity {stats.class_specificity(tag):.3f})")


def _check(blocks: Sequence[str], classes: Sequence[str]) -> None:
    if not blocks:
        raise ValueError("no blocks to plot")
    if not classes:
        raise ValueError("no classes to plot")


def plot_class_means(stats: ExcitationStats, blocks: Sequence[str], classes: Sequence[str], path: PathLike,
                     *, channels: int = 50, caption: str = "", ncols: Optional[int] = None,
                     show_all: bool = True) -> Path:
    """(a) Mean excitation of the first `channels` channels for each of `classes` (best <= 4) and for all
    classes together (black dashed), one panel per block in `blocks`."""
    _check(blocks, classes)
    counts = stats.counts()
    fig, axes = _panels(blocks, ncols)
    handles = None
    for ax, tag in zip(axes, blocks):
        n = min(channels, stats.block(tag).channels)
        x = np.arange(n)
        drawn = []
        for i, cls in enumerate(classes):
            y = stats.per_class_mean(tag, cls)[:n]
            ax.plot(x, y, color=CLASS_COLORS[i % len(CLASS_COLORS)], linewidth=1.2, marker="o",
                    markersize=2.2, label=f"{cls} (n={counts[cls]})")
            drawn.append(y)
        if show_all:
            y = stats.overall_mean(tag)[:n]
            ax.plot(x, y, label=f"all classes (n={sum(counts.values())})", **ALL_STYLE)
            drawn.append(y)
        _unit_ylim(ax, drawn)
        ax.set_title(_block_title(stats, tag, n), fontsize=10)
        ax.set_xlabel("channel index")
        ax.set_ylabel("mean excitation")
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()
    fig.legend(*handles, loc="outside lower center", ncols=min(5, len(handles[0])), frameon=False)
    fig.suptitle(_title(f"Mean excitation per channel, by class ({len(blocks)} SE blocks, shallow to deep)",
                        caption), fontsize=12)
    return _save(fig, path)


def plot_within_class(stats: ExcitationStats, blocks: Sequence[str], classes: Sequence[str],
                      path: PathLike, *, channels: int = 50, caption: str = "",
                      ncols: Optional[int] = None) -> Path:
    """(b) Within-class mean (line) +- one population std (shaded band) of the first `channels`
    channels for each of `classes` (the paper uses two), one panel per block."""
    _check(blocks, classes)
    counts = stats.counts()
    fig, axes = _panels(blocks, ncols)
    handles = None
    for ax, tag in zip(axes, blocks):
        n = min(channels, stats.block(tag).channels)
        x = np.arange(n)
        drawn = []
        for i, cls in enumerate(classes):
            color = CLASS_COLORS[i % len(CLASS_COLORS)]
            m = stats.per_class_mean(tag, cls)[:n]
            s = stats.per_class_std(tag, cls)[:n]
            ax.fill_between(x, m - s, m + s, color=color, alpha=0.22, linewidth=0)
            ax.plot(x, m, color=color, linewidth=1.3, label=f"{cls}: mean ± std (n={counts[cls]})")
            drawn.append(m)
        _unit_ylim(ax, drawn)
        ax.set_title(_block_title(stats, tag, n), fontsize=10)
        ax.set_xlabel("channel index")
        ax.set_ylabel("excitation")
        ax.grid(alpha=0.3)
        handles = ax.get_legend_handles_labels()
    fig.legend(*handles, loc="outside lower center", ncols=len(handles[0]), frameon=False)
    fig.suptitle(_title("Excitation within a class: mean ± std over images", caption), fontsize=12)
    return _save(fig, path)


def _depth_axes(blocks: Sequence[str], highlight: Optional[Sequence[str]]):
    fig = Figure(figsize=(max(6.0, 0.42 * len(blocks) + 2.5), 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(blocks))
    ax.set_xticks(x, blocks, rotation=45 if len(blocks) > 6 else 0, ha="right" if len(blocks) > 6 else "center",
                  fontsize=9)
    # stage boundaries as faint vertical lines
    stages = [parse_tag(t)[0] if parse_tag(t) else None for t in blocks]
    for i in range(1, len(blocks)):
        if stages[i] is not None and stages[i] != stages[i - 1]:
            ax.axvline(i - 0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("SE block (network depth →)")
    ax.grid(alpha=0.3, axis="y")
    hl = [i for i, t in enumerate(blocks) if highlight and t in highlight]
    return fig, ax, x, hl


def plot_specificity(stats: ExcitationStats, blocks: Sequence[str], path: PathLike, *, caption: str = "",
                     highlight: Optional[Sequence[str]] = None) -> Path:
    """(c) Class specificity (see :meth:`ExcitationStats.class_specificity`) vs depth, with the level that
    labels unrelated to the gates would give; blocks in `highlight` (the panels of (a)/(b)) get filled
    markers."""
    if not blocks:
        raise ValueError("no blocks to plot")
    fig, ax, x, hl = _depth_axes(blocks, highlight)
    y = np.array([stats.class_specificity(t) for t in blocks])
    ax.plot(x, y, color=CLASS_COLORS[0], marker="o", markerfacecolor="white", linewidth=1.6,
            label="all SE blocks")
    if hl:
        ax.plot(x[hl], y[hl], linestyle="none", marker="o", color=CLASS_COLORS[0],
                label="blocks shown in the per-channel figures")
    chance = np.array([stats.chance_specificity(t) for t in blocks])
    if np.isfinite(chance).any():
        ax.plot(x, chance, color="grey", linestyle="--", linewidth=1.0,
                label=f"chance level (K-1)/(N-1) = {np.nanmax(chance):.3g} (labels unrelated to gates)")
    top = np.nanmax(np.concatenate([y, chance])) if np.isfinite(y).any() else 1.0
    ax.set_ylim(0, min(1.02, max(0.05, top * 1.15)))
    ax.set_ylabel("class specificity\n(between-class share of variance)")
    fig.legend(loc="outside lower center", ncols=2, frameon=False, fontsize=9)
    n = sum(stats.counts().values())
    k = len(stats.present_classes())
    fig.suptitle(_title(f"Class specificity of the excitation vs depth ({k} classes, {n} images)", caption),
                 fontsize=12)
    return _save(fig, path)


def plot_saturation(stats: ExcitationStats, blocks: Sequence[str], path: PathLike, *,
                    threshold: float = DEFAULT_THRESHOLD, caption: str = "",
                    highlight: Optional[Sequence[str]] = None) -> Path:
    """(d) Share of (image, channel) gate values above `threshold` vs depth."""
    if not blocks:
        raise ValueError("no blocks to plot")
    fig, ax, x, hl = _depth_axes(blocks, highlight)
    y = np.array([stats.saturation_share(t, threshold) for t in blocks])
    ax.plot(x, y, color=CLASS_COLORS[1], marker="s", markerfacecolor="white", linewidth=1.6,
            label="all SE blocks")
    if hl:
        ax.plot(x[hl], y[hl], linestyle="none", marker="s", color=CLASS_COLORS[1],
                label="blocks shown in the per-channel figures")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel(f"share of gate values > {threshold:g}")
    fig.legend(loc="outside lower center", ncols=2, frameon=False, fontsize=9)
    n = sum(stats.counts().values())
    fig.suptitle(_title(f"Saturated excitation vs depth (gate > {threshold:g}; {n} images)", caption),
                 fontsize=12)
    return _save(fig, path)


__all__ = ["plot_class_means", "plot_saturation", "plot_specificity", "plot_within_class"]
