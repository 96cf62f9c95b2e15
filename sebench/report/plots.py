"""Report plots (PNG and SVG under results/<profile>/plots/), read from the store only.

    plot_spec(data, out_dir) -> [paths]

- <spec>_throughput: test top-1 error (mean ± std over seeds) against training and against inference
  throughput (img/s; the batch size is in the axis label), each baseline joined by a line to its variants.
- <spec>_curves: test top-1 error per epoch (metrics.jsonl), mean over seeds with a min-max band, one line
  per configuration; beside it the last 25% of the epochs with their own y axis (zoom_window), where the
  arms differ by tenths of a point that the full range flattens.
- <spec>_effects (tables with paired comparisons): each comparison's Δ test top-1 error (variant − baseline,
  and dash-dot variant − second baseline where the table has one; accuracy in the tables that report
  accuracy) per epoch, paired by seed over the seeds with both arms at that epoch, with its 95% t interval:
  when during training a design helps or hurts (SE behind plain while the lr is high, and catching up as it
  anneals). Exploratory: the table's claim is the final epoch; the other epochs' intervals are not corrected
  for looking at every epoch.
- <spec>_reduction (specs whose rows vary the SE reduction ratio r): error against r with the no-SE baseline
  as a horizontal band, and params against r; the source's numbers as a second series.

Every figure names the data variant, profile, hardware and seeds in its caption. Figures are drawn on
matplotlib's Agg canvas without pyplot, so no global backend is switched and nothing opens a window.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sebench.report.data import (Combo, ReportData, comparisons, data_label, effect_label, fmt_num, hardware_label,
                                 profile_caveat, seeds_label, unique)
from sebench.report.stats import INTERVAL_METHOD, mean_std, paired_delta
from sebench.store import RunDir, read_jsonl

MARKERS = ["o", "^", "s", "D", "v", "P", "X", "*"]
LINESTYLES = ["-", "--", ":", "-."]


def _figure(width: float, height: float):
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matplotlib.rcParams["svg.hashsalt"] = "sebench"  # stable element ids: a re-drawn SVG diffs cleanly
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


POINTS = "Points: mean over seeds, bars ± sample std (none for n=1); final-epoch test numbers."


def caption(data: ReportData, what: str = POINTS) -> str:
    runs = data.all_runs()
    return (f"Data: {data_label(runs)}. Profile: {data.profile}, {profile_caveat(data.profile)}. "
            f"Hardware: {hardware_label(runs)}. Seeds: {seeds_label(data)}. {what}")


def _finish(fig, data: ReportData, title: str, out_dir: Path, stem: str, what: str = POINTS) -> list[Path]:
    width, height = fig.get_figwidth(), fig.get_figheight()
    text = "\n".join(textwrap.wrap(caption(data, what), int(width * 17)))
    n_lines = text.count("\n") + 1
    bottom = (0.12 + 0.15 * n_lines) / height
    fig.suptitle(title, fontsize=11)
    fig.text(0.01, 0.01, text, fontsize=7.5, va="bottom", ha="left", color="#333333")
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.35 / height))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
        path = out_dir / f"{stem}.{ext}"
        tmp = path.with_name(f".{path.name}.tmp")
        fig.savefig(tmp, format=ext, metadata=meta)
        tmp.replace(path)
        paths.append(path)
    return paths


def _style(data: ReportData):
    """Colour per table row, marker per column value (or per baseline/variant without a column axis)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    rows = data.row_keys()
    cols = data.col_values()

    def color(combo: Combo):
        if data.col_axis is None:
            return cmap(data.combos.index(combo) % 10)
        return cmap(rows.index(data.row_key(combo)) % 10)

    def marker(combo: Combo):
        if data.col_axis is None:
            return "s" if data.is_baseline(combo) else "o"
        return MARKERS[[c.label for c in cols].index(combo[data.col_axis]) % len(MARKERS)]

    def linestyle(combo: Combo):
        if data.col_axis is None:
            return "--" if data.is_baseline(combo) else "-"
        return LINESTYLES[[c.label for c in cols].index(combo[data.col_axis]) % len(LINESTYLES)]

    return color, marker, linestyle


def _stat(data: ReportData, combo: Combo, column: str, hardware: Optional[str] = None) -> tuple[float, float, int]:
    vals = [r.row.get(column) for _, r in sorted(data.runs(combo).items())
            if hardware is None or r.row.get("device_name") == hardware]
    vals = [v for v in vals if _number(v)]
    return mean_std(vals)


def throughput_hardware(data: ReportData) -> tuple[Optional[str], list[str]]:
    """(the hardware whose runs the throughput plot shows, the other hardware left out). Speeds measured
    on different machines are not comparable, so with several, the plot keeps the one with most runs
    (None: all runs share one)."""
    counts = Counter(str(r.row.get("device_name") or "unknown device") for r in data.all_runs())
    if len(counts) <= 1:
        return None, []
    keep = counts.most_common(1)[0][0]
    return keep, sorted(h for h in counts if h != keep)


def _batch_label(data: ReportData, column: str) -> str:
    sizes = unique(r.row.get(column) for r in data.all_runs())
    return "batch " + "/".join(fmt_num(s) for s in sizes) if sizes else "batch unknown"


def remeasured(data: ReportData) -> Optional[dict]:
    """The `sebench speed` sitting that re-measured every plotted configuration ({device_name, threads,
    repeats}), or None when a configuration has no such numbers or they come from different sittings."""
    sittings = set()
    for combo in data.combos:
        runs = list(data.runs(combo).values())
        if not runs:
            continue
        measured = [r for r in runs if _number(r.row.get("speed_train_img_s"))]
        if not measured:
            return None
        sittings |= {(r.row.get("speed_device_name"), r.row.get("speed_threads"), r.row.get("speed_repeats"))
                     for r in measured}
    if len(sittings) != 1:
        return None
    device, threads, repeats = sittings.pop()
    return {"device_name": device, "threads": threads, "repeats": repeats}


def _number(v) -> bool:
    return isinstance(v, float) and not math.isnan(v)


def _speed(data: ReportData, combo: Combo, mode: str) -> tuple[float, float, float]:
    """(median, min, max) img/s of a configuration's re-measurement (its seeds share one)."""
    row = next(r.row for r in data.runs(combo).values() if _number(r.row.get(f"speed_{mode}_img_s")))
    return row[f"speed_{mode}_img_s"], row[f"speed_{mode}_img_s_min"], row[f"speed_{mode}_img_s_max"]


def plot_throughput(data: ReportData, out_dir: Path) -> list[Path]:
    combos = [c for c in data.combos if data.runs(c)]
    if not combos:
        return []
    color, marker, _ = _style(data)
    sitting = remeasured(data)
    hardware, left_out = (None, []) if sitting else throughput_hardware(data)
    fig = _figure(15, 6.2)
    axes = fig.subplots(1, 2, sharey=True)
    panels = [("train", "train_img_s", f"training throughput (img/s, {_batch_label(data, 'batch_size')})"),
              ("infer", "infer_img_s", f"inference throughput (img/s, {_batch_label(data, 'infer_batch_size')})")]
    for ax, (mode, column, xlabel) in zip(axes, panels):
        points = {}
        for combo in combos:
            y, ys, n = _stat(data, combo, "final_test_top1_err", hardware)
            if sitting:
                x, lo, hi = _speed(data, combo, mode)
                xerr = [[x - lo], [hi - x]]
            else:
                x, xs, _ = _stat(data, combo, column, hardware)
                xerr = xs if n > 1 else None
            if math.isnan(x) or math.isnan(y):
                continue
            points[combo] = (x, y)
            ax.errorbar(x, y, xerr=xerr, yerr=ys if n > 1 else None, fmt=marker(combo),
                        color=color(combo), markersize=8, capsize=3, label=f"{data.short_label(combo)} (n={n})")
        ax.margins(x=0.25, y=0.2)
        _annotate(ax, [(label, xy) for label, xy in zip(_point_labels(data, list(points)), points.values())])
        for combo, (x, y) in points.items():
            base = data.baseline_of(combo)
            if base in points:
                bx, by = points[base]
                ax.plot([bx, x], [by, y], color=color(combo), alpha=0.6, linewidth=1.2, zorder=0)
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
        ax.set_xlim(left=max(0.0, ax.get_xlim()[0]))  # throughput is never negative
    axes[0].set_ylabel("test top-1 error (%), lower is better")
    axes[0].set_title("error vs training throughput", fontsize=10)
    axes[1].set_title("error vs inference throughput", fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[1].legend(handles, labels, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.02, 1),
                       title="lines join each baseline\nto its variants" if data.delta_axis is not None else None,
                       title_fontsize=7.5)
    if sitting:
        threads = sitting["threads"]
        speed_note = (f" Throughput: every configuration re-measured in one sitting by `sebench speed` on "
                      f"{sitting['device_name']}, {fmt_num(threads) if _number(threads) else '?'} thread(s), "
                      f"round-robin; points are medians of {fmt_num(sitting['repeats'])} repeats, bars min..max "
                      "(training: forward, backward and step on a fixed batch; inference: forward).")
        points = ("Error: mean over seeds, bars ± sample std (none for n=1); final-epoch test numbers."
                  + speed_note)
    else:
        points = (POINTS + " Training img/s: mean over the run's epochs at its training batch size (data "
                  "loading, forward, backward, step), measured while it trained; inference img/s: the trained "
                  "model after training, at the benchmark batch size. `sebench speed` re-measures them side by "
                  "side." + (f" Only the runs on {hardware} are shown (speeds on other machines are not "
                             f"comparable); left out: the runs on {', '.join(left_out)}." if hardware else ""))
    return _finish(fig, data, f"{data.spec.title}: top-1 error vs throughput", out_dir,
                   f"{data.spec.name}_throughput", points)


def _point_labels(data: ReportData, combos: list[Combo]) -> list[str]:
    """Labels beside points: the legend holds the full names, so parenthetical glosses (e.g. "quick stand-in
    for ResNet-50") are dropped next to the point, unless that would make two labels the same."""
    full = [data.short_label(c) for c in combos]
    short = [re.sub(r"\s*\([^)]*\)", "", label).strip() or label for label in full]
    return short if len(set(short)) == len(short) else full


# Label offsets tried in turn (points above the point): beside it, then a line down, a line up, two down, ...
_LABEL_LINES = [2] + [2 + sign * 9 * k for k in range(1, 12) for sign in (-1, 1)]


def _annotate(ax, items: list[tuple[str, tuple[float, float]]], fontsize: float = 7) -> None:
    """Label points. A label goes right of its point when it fits inside the panel there, else on the side with
    more room; one that would overlap a label already placed moves a line up or down (nearest free line)."""
    ax.autoscale_view()
    renderer = ax.figure.canvas.get_renderer()
    panel = ax.get_window_extent(renderer)
    pt = ax.figure.dpi / 72  # display pixels per typographic point
    placed = []  # display-space boxes of the labels drawn so far
    for text, (x, y) in items:
        px, _ = ax.transData.transform((x, y))
        label = ax.annotate(text, (x, y), textcoords="offset points", xytext=(6, 2), fontsize=fontsize)
        left = px + label.get_window_extent(renderer).width + 6 * pt > panel.x1 and panel.x1 - px < px - panel.x0
        if left:
            label.set_horizontalalignment("right")
        dx = -6 if left else 6
        for dy in _LABEL_LINES:
            label.set_position((dx, dy))
            box = label.get_window_extent(renderer)
            if not any(box.overlaps(other) for other in placed):
                break
        else:  # no free line nearby: keep it beside its point
            label.set_position((dx, 2))
            box = label.get_window_extent(renderer)
        placed.append(box)


@dataclass(frozen=True)
class Curve:
    """One arm's test error per epoch over its seeds: the mean, the min-max band, and how many runs."""

    epochs: list[int]
    means: list[float]
    low: list[float]
    high: list[float]
    n: int


def _errors_by_seed(data: ReportData, combo: Combo) -> dict[int, dict[int, float]]:
    """seed -> epoch -> test top-1 error, from each finished run's metrics.jsonl (runs without records left out)."""
    out = {}
    for seed, run in data.runs(combo).items():
        records = read_jsonl(RunDir.of(data.results, data.spec.name, run.row["run_id"]).metrics)
        if records:
            out[seed] = {int(r["epoch"]): float(r["test_top1_err"]) for r in records
                         if r.get("test_top1_err") is not None}
    return out


def _curve(data: ReportData, combo: Combo) -> Curve:
    by_seed = _errors_by_seed(data, combo)
    n = len(by_seed)
    per_epoch: dict[int, list[float]] = {}
    for errors in by_seed.values():
        for epoch, err in errors.items():
            per_epoch.setdefault(epoch, []).append(err)
    epochs = sorted(per_epoch)
    means = [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs]
    return Curve(epochs, means, [min(per_epoch[e]) for e in epochs], [max(per_epoch[e]) for e in epochs], n)


ZOOM = 0.25  # the zoomed panel shows this last share of the epochs


def zoom_window(last_epoch: int) -> Optional[tuple[int, int]]:
    """The epochs of the zoomed panel, (first, last): the last quarter of training, at least two epochs, where
    the curves have flattened and the arms' differences are a few tenths of a point. None with under 4 epochs
    (every epoch is already readable)."""
    if last_epoch < 4:
        return None
    return last_epoch - max(2, math.ceil(ZOOM * last_epoch)) + 1, last_epoch


def plot_curves(data: ReportData, out_dir: Path) -> list[Path]:
    combos = [c for c in data.combos if data.runs(c)]
    curves = {c: _curve(data, c) for c in combos}
    curves = {c: v for c, v in curves.items() if v.epochs}
    if not curves:
        return []
    _, marker, linestyle = _style(data)
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]

    def color(combo):  # one colour per configuration: a few lines, each must be told apart
        return cmap(list(curves).index(combo) % 10)

    window = zoom_window(max(e for v in curves.values() for e in v.epochs))
    fig = _figure(14 if window else 12, 6.2)
    if window:
        ax, zoom = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    else:
        ax, zoom = fig.subplots(), None
    few = max(len(v.epochs) for v in curves.values()) <= 3
    for combo, cv in curves.items():
        for a in (ax, zoom) if zoom is not None else (ax,):
            a.plot(cv.epochs, cv.means, linestyle=linestyle(combo), marker=marker(combo) if few or a is zoom else None,
                   markersize=3.5, color=color(combo), label=f"{data.short_label(combo)} (n={cv.n})")
            if cv.n > 1:
                a.fill_between(cv.epochs, cv.low, cv.high, color=color(combo), alpha=0.15, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test top-1 error (%)")
    ax.grid(True, alpha=0.3)
    if few:
        ax.set_xticks(sorted({e for v in curves.values() for e in v.epochs}))
    what = "Lines: test top-1 error after each epoch (metrics.jsonl), mean over seeds; shaded band: min-max over seeds."
    if zoom is not None:
        first, last = window
        inside = [y for cv in curves.values()
                  for e, *ys in zip(cv.epochs, cv.means, cv.low, cv.high) if first <= e <= last for y in ys]
        pad = max(0.05, 0.08 * (max(inside) - min(inside)))
        zoom.set_xlim(first - 0.3, last + 0.3)
        zoom.set_ylim(min(inside) - pad, max(inside) + pad)  # fitted to the window: the arms' gap fills it
        zoom.set_title(f"last {ZOOM:.0%} of the epochs ({first}-{last}), y axis fitted to them", fontsize=9)
        zoom.set_xlabel("epoch")
        zoom.grid(True, alpha=0.3)
        zoom.xaxis.get_major_locator().set_params(integer=True)
        ax.axvspan(first - 0.5, last + 0.5, color="#888888", alpha=0.08, linewidth=0)  # where the zoom looks
        what += f" Right: epochs {first}-{last} (the grey span on the left) with their own y axis."
    (zoom if zoom is not None else ax).legend(fontsize=8, title="mean over seeds;\nband = min-max",
                                              title_fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    return _finish(fig, data, f"{data.spec.title}: training curves", out_dir, f"{data.spec.name}_curves", what)


@dataclass
class EffectCurve:
    """One comparison's paired Δ per epoch in its table's top-1 metric (error, or accuracy = 100 − error):
    mean, 95% interval (None where under 2 pairs or no spread), and pairs per epoch."""

    label: str
    metric: str  # "top1_err" or "top1_acc"
    epochs: list[int]
    means: list[float]
    low: list[Optional[float]]
    high: list[Optional[float]]
    n: list[int]
    second: bool = False  # against the table's second baseline


EFFECT_METRICS = {"top1_err": ("error", 1.0), "top1_acc": ("accuracy", -1.0)}  # metric -> (word, sign vs error)


def effect_curves(data: ReportData) -> list[EffectCurve]:
    """Every top-1 comparison of the table (error or accuracy, as the table reports it) that has a paired
    epoch, in table order: those against the baseline, then those against the second baseline."""
    out, cache = [], {}

    def errors(combo):
        if combo not in cache:
            cache[combo] = _errors_by_seed(data, combo)
        return cache[combo]

    for second, comp in [(False, c) for c in comparisons(data)] + [(True, c) for c in comparisons(data, True)]:
        if comp.metric not in EFFECT_METRICS or comp.pending:
            continue
        sign = EFFECT_METRICS[comp.metric][1]  # Δ accuracy = −Δ error
        va, vb = errors(comp.combo), errors(comp.base)
        seeds = sorted(set(va) & set(vb))
        curve = EffectCurve(effect_label(data, comp), comp.metric, [], [], [], [], [], second=second)
        for epoch in sorted({e for s in seeds for e in va[s] if e in vb[s]}):
            both = [s for s in seeds if epoch in va[s] and epoch in vb[s]]
            d = paired_delta({s: sign * va[s][epoch] for s in both}, {s: sign * vb[s][epoch] for s in both})
            for series, value in ((curve.epochs, epoch), (curve.means, d.mean), (curve.low, d.low),
                                  (curve.high, d.high), (curve.n, d.n)):
                series.append(value)
        if curve.epochs:
            out.append(curve)
    return out


def plot_effects(data: ReportData, out_dir: Path) -> list[Path]:
    curves = effect_curves(data)
    if not curves:
        return []
    import matplotlib

    word = EFFECT_METRICS[curves[0].metric][0]
    curves = [c for c in curves if c.metric == curves[0].metric]  # one axis: the table's first top-1 metric
    cmap = matplotlib.colormaps["tab10"]
    fig = _figure(12, 5.6)
    ax = fig.subplots()
    ax.axhline(0.0, color="#333333", linewidth=0.8, linestyle="--")
    few = max(len(c.epochs) for c in curves) <= 3
    for i, c in enumerate(curves):
        color = cmap(i % 10)
        n = f"n={min(c.n)}" if min(c.n) == max(c.n) else f"n={min(c.n)}-{max(c.n)}"
        ax.plot(c.epochs, c.means, marker="o" if few else None, markersize=3.5, color=color,
                linestyle="-." if c.second else "-", label=f"{c.label}, {n}")
        band = [(e, lo, hi) for e, lo, hi in zip(c.epochs, c.low, c.high) if lo is not None]
        if band:
            ax.fill_between([b[0] for b in band], [b[1] for b in band], [b[2] for b in band], color=color,
                            alpha=0.15, linewidth=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"Δ test top-1 {word} (points), variant − baseline")
    ax.grid(True, alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    better = "Δ below 0: the variant's error is lower" if word == "error" else \
        "Δ above 0: the variant's accuracy is higher"
    ax.legend(fontsize=8, title=better, title_fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1))
    what = (f"Lines: Δ test top-1 {word} after each epoch (metrics.jsonl), variant − its same-recipe baseline, "
            f"paired by seed over the seeds with both arms at that epoch; band: its 95% interval "
            f"({INTERVAL_METHOD}; none with one pair). Exploratory: the table's claim is the final epoch; the other "
            f"epochs' intervals are not corrected for looking at every epoch." +
            (" Dash-dot: against the second baseline." if any(c.second for c in curves) else ""))
    return _finish(fig, data, f"{data.spec.title}: paired Δ per epoch", out_dir, f"{data.spec.name}_effects", what)


def _reduction(data: ReportData, combo: Combo) -> Optional[int]:
    runs = data.expected.get(combo)
    if not runs:
        return None
    se = runs[0].model.se
    if se is None or se.latent_channels is not None or runs[0].model.surgery is not None:
        return None
    return se.reduction


def plot_reduction(data: ReportData, out_dir: Path) -> list[Path]:
    """Only for specs whose configurations differ in r (one configuration per r) and have a no-SE baseline."""
    by_r: dict[int, list[Combo]] = {}
    for combo in data.combos:
        r = _reduction(data, combo)
        if r is not None:
            by_r.setdefault(r, []).append(combo)
    if len(by_r) < 2 or any(len(v) > 1 for v in by_r.values()):
        return []
    rs = sorted(by_r)
    bases = [c for c in data.combos if data.is_baseline(c) and data.expected.get(c)
             and data.expected[c][0].model.se is None]
    if not any(data.runs(by_r[r][0]) for r in rs):
        return []
    same_axis = data.profile == "paper"
    fig = _figure(13, 7)
    axes = fig.subplots(1, 2)
    panels = [("final_test_top1_err", "top1_err", lambda v: v, "test top-1 error (%)"),
              ("params", "params_m", lambda v: v / 1e6, "params (M)")]
    for ax, (column, metric, convert, ylabel) in zip(axes, panels):
        ours = [(r, *_stat(data, by_r[r][0], column)) for r in rs]
        ours = [(r, convert(m), convert(s) if column == "params" else s, n) for r, m, s, n in ours
                if not math.isnan(m)]
        if ours:
            ax.errorbar([o[0] for o in ours], [o[1] for o in ours],
                        yerr=[o[2] if o[3] > 1 else 0 for o in ours], fmt="o-", color="C0", capsize=3,
                        label=f"measured ({data.profile}), n={'/'.join(str(n) for n in unique(o[3] for o in ours))}")
        for base in bases:
            m, s, n = _stat(data, base, column)
            if math.isnan(m):
                continue
            m, s = convert(m), convert(s) if column == "params" else s
            if n > 1 and s > 0:
                ax.axhspan(m - s, m + s, color="C0", alpha=0.15, linewidth=0)
            ax.axhline(m, color="C0", linestyle="--", linewidth=1,
                       label=f"{data.short_label(base)} (no SE), measured" + (" ± std" if n > 1 else ""))
        src_ax = ax if same_axis else ax.twinx()
        src = [(r, data.source_cell(by_r[r][0], metric)[0]) for r in rs]
        src = [(r, v) for r, v in src if v is not None]
        if src:
            src_ax.plot([p[0] for p in src], [p[1] for p in src], "s:", color="C3", markersize=9,
                        markerfacecolor="none", label="source's numbers" + ("" if same_axis else " (right axis)"))
        for base in bases:
            v = data.source_cell(base, metric)[0]
            if v is not None:
                src_ax.axhline(v, color="C3", linestyle=":", linewidth=1,
                               label=f"source: {data.short_label(base)} (no SE)")
        if not same_axis:
            src_ax.set_ylabel(f"source's {ylabel}", color="C3")
            src_ax.tick_params(axis="y", colors="C3")
        ax.set_xscale("log", base=2)
        ax.set_xticks(rs)
        ax.set_xticklabels([str(r) for r in rs])
        ax.set_xlabel("reduction ratio r (hidden width = C // r)")
        ax.set_ylabel(f"measured {ylabel}", color="C0")
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if src_ax is not ax:
            h2, l2 = src_ax.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        if src_ax is not ax:  # measured series drawn above the source's axis
            ax.set_zorder(src_ax.get_zorder() + 1)
            ax.patch.set_visible(False)
        ax.legend(handles, labels, fontsize=7.5, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2)
    scale = "" if same_axis else "\nred, right axis: the source's numbers (not comparable in this profile)"
    axes[0].set_title(f"top-1 error vs r (blue band: no-SE baseline, mean ± std){scale}", fontsize=9)
    axes[1].set_title(f"parameters vs r{scale}", fontsize=9)
    return _finish(fig, data, f"{data.spec.title}: error and params vs reduction ratio", out_dir,
                   f"{data.spec.name}_reduction")


PLOT_KINDS = ("throughput", "curves", "effects", "reduction")  # file name suffixes, in plot_spec's order


def existing_plots(spec_name: str, out_dir: str | Path) -> list[Path]:
    """The plots an earlier report wrote for `spec_name` (kept by `report --no-plots`)."""
    return [p for kind in PLOT_KINDS for ext in ("png", "svg")
            if (p := Path(out_dir) / f"{spec_name}_{kind}.{ext}").is_file()]


def plot_spec(data: ReportData, out_dir: str | Path) -> list[Path]:
    """Every plot that `data` supports; [] when it has no finished runs."""
    out_dir = Path(out_dir)
    if not data.has_finished():
        return []
    paths = (plot_throughput(data, out_dir) + plot_curves(data, out_dir) + plot_effects(data, out_dir)
             + plot_reduction(data, out_dir))
    return paths


# ---- the claims ledger's forest plot ----------------------------------------------------------------------

VERDICT_COLORS = {"reproduced": "#1a7f37", "better": "#1a7f37", "contradicts the source": "#cf222e",
                  "worse": "#cf222e", "equivalent": "#0969da", "inconclusive": "#57606a",
                  "no verdict (n < 3)": "#a8a8a8", "not tested": "#d0d0d0"}
FOREST_NOTE = ("Each line: a claim of results/CLAIMS.md, its Δ (point) with the raw 95% t interval; ◆ the source's "
               "Δ; dashed line 0; colour and right-hand text: the ledger's verdict (green reproduced / better, red "
               "contradicts the source / worse, blue equivalent, dark grey inconclusive with its MDE, light grey "
               "no verdict with n < 3); ‡ some of the claim's pairs trained on different machines. Δ = variant − "
               "baseline, paired by seed; accuracy Δ > 0 and error or loss Δ < 0 favour the variant. Correlation "
               "panels: Spearman ρ with its exact p. Omnibus tests and every number: results/CLAIMS.md, claims.csv.")


def forest_plot(panels: list[dict], out: Path) -> Path:
    """One horizontal line per claim, grouped by table, one panel per section and unit (panels as
    sebench.report.claims builds them: title, groups [(name, [line])], correlation). Written atomically as a
    PNG; returns its path."""
    from matplotlib.lines import Line2D

    row_h, head_h = 0.21, 0.27
    heights = [0.55 + sum(head_h + row_h * len(lines) for _, lines in p["groups"]) for p in panels]
    note = "\n".join(textwrap.wrap(FOREST_NOTE, 170))
    width, foot = 14.0, 0.35 + 0.16 * (note.count("\n") + 1)
    fig = _figure(width, sum(heights) + foot + 0.7)
    grid = fig.add_gridspec(len(panels), 1, height_ratios=heights, left=0.33, right=0.80,
                            top=1 - 0.75 / fig.get_figheight(), bottom=(foot + 0.25) / fig.get_figheight(),
                            hspace=0.55 / max(1.0, sum(heights) / len(panels)))
    for k, panel in enumerate(panels):
        ax = fig.add_subplot(grid[k])
        labels, weights, y = [], [], 0
        ys: list[float] = []
        for name, lines in panel["groups"]:
            labels.append(name)
            weights.append("bold")
            ys.append(y)
            y += 1
            for line in lines:
                color = VERDICT_COLORS.get(line["kind"], "#57606a")
                if line.get("low") is not None:
                    ax.plot([line["low"], line["high"]], [y, y], color=color, lw=2.2, solid_capstyle="butt")
                if line.get("mean") is not None:
                    ax.plot([line["mean"]], [y], "o", color=color, ms=4.5, zorder=3)
                if line.get("source") is not None:
                    ax.plot([line["source"]], [y], "D", mfc="white", mec="#bc4c00", mew=1.4, ms=5.5, zorder=4)
                labels.append(line["label"] + (" ‡" if line.get("mixed") else ""))
                weights.append("normal")
                ys.append(y)
                ax.text(1.01, y, f"{line['verdict']}  ({line['right']})", transform=ax.get_yaxis_transform(),
                        va="center", ha="left", fontsize=7.5, color=color)
                y += 1
        ax.axvline(0, color="#333333", lw=0.9, ls="--", zorder=1)
        if panel.get("correlation"):
            ax.set_xlim(-1.05, 1.05)
        ax.set_yticks(ys)
        ax.set_yticklabels(labels, fontsize=7.5)
        for tick, weight in zip(ax.get_yticklabels(), weights):
            tick.set_fontweight(weight)
        ax.set_ylim(y - 0.4, -0.6)
        ax.grid(axis="x", color="#e6e6e6", lw=0.6)
        ax.set_title(panel["title"], fontsize=10, loc="left", fontweight="bold")
        ax.tick_params(axis="x", labelsize=7.5)
    handles = [Line2D([], [], color=VERDICT_COLORS[k], lw=2.2, marker="o", ms=4, label=k)
               for k in ("reproduced", "contradicts the source", "equivalent", "inconclusive", "no verdict (n < 3)")]
    handles.append(Line2D([], [], ls="", marker="D", mfc="white", mec="#bc4c00", mew=1.4, ms=5.5, label="source Δ"))
    handles.append(Line2D([], [], ls="", marker="", label="‡ some pairs from different machines"))
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 1 - 0.05 / fig.get_figheight()))
    fig.text(0.01, 0.01, note, fontsize=7.5, va="bottom", ha="left", color="#333333")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    fig.savefig(tmp, format="png", metadata={"Software": None})
    tmp.replace(out)
    return out
