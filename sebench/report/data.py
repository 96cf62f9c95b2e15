"""What a report knows about one spec in one profile: the layout the spec declares (rows, columns, baselines,
pending rows), the runs the store holds for it (results/<profile>/runs.csv), and the source's numbers.

Tables and plots both read a `ReportData`; neither trains, measures or re-derives anything the store does not
hold. Runs are matched to the spec by their labels (`label.<axis>` columns) and seed; a run whose run_id is
not the one the spec expands to today (an edited spec, or `--set` overrides) is still used and footnoted.
"""

from __future__ import annotations

import csv
import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional

from sebench.errors import UserError
from sebench.spec import RunConfig, Spec, SweepAxis, SweepValue, expand, profile_axes
from sebench.store import SPEED_COLUMNS, damaged_runs, hardware_text

# Our metric names (spec.source.metrics keys) -> (header, runs.csv column, conversion, decimals, kind).
# kind "quality": measured per seed, gets paired deltas and verdicts; "cost": counted (params, FLOPs).
METRICS: dict[str, tuple[str, str, object, int, str]] = {
    "top1_err": ("top-1 err. (%)", "final_test_top1_err", lambda v: v, 2, "quality"),
    "top5_err": ("top-5 err. (%)", "final_test_top5_err", lambda v: v, 2, "quality"),
    "top1_acc": ("top-1 acc. (%)", "final_test_top1_err", lambda v: 100.0 - v, 2, "quality"),
    "top5_acc": ("top-5 acc. (%)", "final_test_top5_err", lambda v: 100.0 - v, 2, "quality"),
    "test_loss": ("test loss", "final_test_loss", lambda v: v, 4, "quality"),
    "params_m": ("params (M)", "params", lambda v: v / 1e6, 3, "cost"),
    "gflops": ("GFLOPs", "flops", lambda v: v / 1e9, 3, "cost"),
}
ACCURACY_METRICS = ("top1_acc", "top5_acc")
DEFAULT_METRICS = ("top1_err", "top5_err")

NUMERIC_COLUMNS = ("seed", "epochs", "batch_size", "final_test_top1_err", "final_test_top5_err",
                   "final_test_loss", "final_train_loss", "params", "flops", "train_img_s", "infer_img_s",
                   "infer_batch_size", "threads", "wall_s",
                   *(c for c in SPEED_COLUMNS if c != "speed_device_name"))

# Profiles that stand in for the source's recipe (small models or data, few epochs, or seconds): their
# comparisons go in a section of their own wherever claims are listed.
STAND_IN_PROFILES = ("quick", "smoke")

PROFILE_NOTES = {
    "paper": "the source's recipe",
    "quick": "a CPU stand-in: its numbers are NOT comparable with the paper's (small models or data, few epochs)",
    "smoke": "a seconds-long pipeline test: its numbers are NOT comparable with the paper's and mean nothing",
}


def profile_caveat(profile: str) -> str:
    return PROFILE_NOTES.get(profile, "a user profile, not the source's recipe: compare with the paper's "
                                      "numbers only if its description says it follows it")


Combo = tuple[str, ...]  # one label per sweep axis, in the spec's axis order


@dataclass
class Run:
    """One row of runs.csv (numbers as floats, text as str)."""

    row: dict


def trained_seconds(runs) -> list[float]:
    """Each run's own wall time (training and evaluation epochs), for the compute lines: runs without one
    (NaN) and runs adopted from another experiment (`reused_from`: trained once, counted there) are left out."""
    return [r.row["wall_s"] for r in runs if isinstance(r.row.get("wall_s"), float)
            and not math.isnan(r.row["wall_s"]) and not r.row.get("reused_from")]


@dataclass
class ReportData:
    spec: Spec
    profile: str
    results: Path
    axes: list[SweepAxis]  # after the profile's replacements
    row_axes: list[int]  # indices of the axes that make a table row (the 'row' axis first)
    col_axis: Optional[int]  # index of the 'column' axis, if any
    delta_axis: Optional[int]  # the axis whose baseline value each delta compares against
    combos: list[Combo]  # every combination, in table order (rows, then columns)
    expected: dict[Combo, list[RunConfig]]  # runs the spec expands to (non-pending combos)
    pending: dict[Combo, str]  # combo -> reason
    finished: dict[Combo, dict[int, Run]]  # combo -> seed -> the finished run used
    failed: list[Run]
    unmatched: list[Run]  # finished runs of this experiment whose labels match no combo of the spec now
    stale: list[Run]  # used runs whose run_id differs from the spec's current expansion
    duplicates: list[Run]  # finished runs of another recipe, not used: a run has the same labels and seed
    metrics: list[str]
    notes: list[str] = field(default_factory=list)  # problems found while reading (shown as footnotes)
    reference_root: Optional[Path] = None

    # ---- layout helpers ----------------------------------------------------------------------------------
    def value(self, combo: Combo, axis: int) -> SweepValue:
        return next(v for v in self.axes[axis].values if v.label == combo[axis])

    def row_key(self, combo: Combo) -> Combo:
        return tuple(combo[i] for i in self.row_axes)

    def row_keys(self) -> list[Combo]:
        return list(dict.fromkeys(self.row_key(c) for c in self.combos))

    def row_label(self, key: Combo) -> str:
        return " / ".join(key) if key else "(base)"

    def col_values(self) -> list[SweepValue]:
        return list(self.axes[self.col_axis].values) if self.col_axis is not None else [None]

    def combo_of(self, row_key: Combo, col: Optional[SweepValue]) -> Combo:
        out = [None] * len(self.axes)
        for i, label in zip(self.row_axes, row_key):
            out[i] = label
        if self.col_axis is not None:
            out[self.col_axis] = col.label
        return tuple(out)

    def baseline_value(self, axis: Optional[int]) -> Optional[SweepValue]:
        if axis is None:
            return None
        return next((v for v in self.axes[axis].values if v.baseline), None)

    def baseline_of(self, combo: Combo) -> Optional[Combo]:
        """The same-recipe baseline a combo is compared with (None for a baseline itself, or no baseline)."""
        base = self.baseline_value(self.delta_axis)
        if base is None or combo[self.delta_axis] == base.label:
            return None
        return self._on_delta_axis(combo, base.label)

    def _on_delta_axis(self, combo: Combo, label: str) -> Combo:
        """`combo` with its delta-axis value replaced by `label` (its same-recipe arm there)."""
        out = list(combo)
        out[self.delta_axis] = label
        return tuple(out)

    def second_baseline_value(self) -> Optional[SweepValue]:
        """The delta axis's value marked `second_baseline` (the spec allows it only beside a baseline)."""
        if self.delta_axis is None:
            return None
        return next((v for v in self.axes[self.delta_axis].values if v.second_baseline), None)

    def second_baseline_of(self, combo: Combo) -> Optional[Combo]:
        """The second value a variant is compared with; None for either baseline, or where there is none."""
        second = self.second_baseline_value()
        if second is None or self.is_baseline(combo) or combo[self.delta_axis] == second.label:
            return None
        return self._on_delta_axis(combo, second.label)

    def is_baseline(self, combo: Combo) -> bool:
        base = self.baseline_value(self.delta_axis)
        return base is not None and combo[self.delta_axis] == base.label

    def label_text(self, combo: Combo) -> str:
        return ", ".join(f"{a.axis}={label}" for a, label in zip(self.axes, combo)) or "(base)"

    def short_label(self, combo: Combo) -> str:
        return " / ".join(combo) or "(base)"

    # ---- numbers -----------------------------------------------------------------------------------------
    def runs(self, combo: Combo) -> dict[int, Run]:
        return self.finished.get(combo, {})

    def per_seed(self, combo: Combo, metric: str) -> dict[int, float]:
        _, column, convert, _, _ = METRICS[metric]
        out = {}
        for seed, run in self.runs(combo).items():
            v = run.row.get(column)
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                out[seed] = convert(v)
        return out

    def expected_seeds(self, combo: Combo) -> list[int]:
        return [rc.seed for rc in self.expected.get(combo, [])]

    def all_runs(self) -> list[Run]:
        return [r for seeds in self.finished.values() for r in seeds.values()]

    def restricted(self, combos: list[Combo]) -> "ReportData":
        """The same data with only `combos` (in their table order): a paired table's headers and compute line
        describe the rows both profiles have, not a row only one of them sweeps."""
        keep = set(combos)
        return replace(self, combos=[c for c in self.combos if c in keep],
                       expected={c: v for c, v in self.expected.items() if c in keep},
                       pending={c: v for c, v in self.pending.items() if c in keep},
                       finished={c: v for c, v in self.finished.items() if c in keep})

    def has_finished(self) -> bool:
        return any(self.finished.values())

    # ---- the source's numbers ----------------------------------------------------------------------------
    @property
    def source(self):
        return self.spec.source[0]

    def source_cell(self, combo: Combo, metric: str) -> tuple[Optional[float], str, Optional[str]]:
        """(value, text as printed, where it is) of the source's number for a combo and metric; value None when
        the source has no legible number there (or the spec does not map this metric/row/column)."""
        ref_file = self.source.reference
        template = self.source.metrics.get(metric)
        if ref_file is None or template is None:
            return None, "", None
        row_refs = [self.value(combo, i).ref for i in self.row_axes[:1]]
        row_ref = row_refs[0] if row_refs else None
        if row_ref is None:
            return None, "", None
        column = template
        if "{column}" in template:
            if self.col_axis is None:
                return None, "", None
            col_ref = self.value(combo, self.col_axis).ref
            if col_ref is None:
                return None, "", None
            column = template.replace("{column}", col_ref)
        from sebench.report.reference import reference_value

        try:
            value = reference_value(ref_file, row_ref, column, root=self.reference_root)
        except UserError as err:
            note = f"source cell not found for {self.short_label(combo)} / {metric}: {err}"
            if note not in self.notes:
                self.notes.append(note)
            return None, "", None
        if value is None:
            return None, "", f"{ref_file}: {row_ref} / {column}"
        text = _raw_reference_text(self.reference_root, ref_file, row_ref, column) or f"{value:g}"
        return value, text, f"{ref_file}: {row_ref} / {column}"


    def source_delta(self, combo: Combo, base: Combo, metric: str) -> tuple[Optional[float], Optional[str]]:
        """The source's variant - baseline for a metric, rounded to the decimals its numbers are printed
        with, and as text ('+0.06'); (None, None) where the source lacks either number."""
        s_var, var_text, _ = self.source_cell(combo, metric)
        s_base, base_text, _ = self.source_cell(base, metric)
        if s_var is None or s_base is None:
            return None, None
        dec = max(_decimals(var_text), _decimals(base_text))
        delta = round(s_var - s_base, dec)
        return delta, f"{delta:+.{dec}f}"


def _decimals(text: str) -> int:
    return len(text.split(".", 1)[1]) if "." in text else 0


@dataclass
class Comparison:
    """One paired comparison a table reports: a variant against its same-recipe baseline on one quality
    metric, with each arm's runs by seed (the pairs are the seeds both have)."""

    combo: Combo
    base: Combo
    metric: str
    variant: dict[int, float]  # seed -> value
    baseline: dict[int, float]
    variant_runs: dict[int, Run]
    baseline_runs: dict[int, Run]
    source_delta: Optional[float] = None
    source_text: Optional[str] = None
    pending: bool = False

    @property
    def seeds(self) -> list[int]:
        return sorted(set(self.variant) & set(self.baseline))

    @property
    def diffs(self) -> tuple[float, ...]:
        return tuple(self.variant[s] - self.baseline[s] for s in self.seeds)

    @property
    def higher_is_better(self) -> bool:
        return self.metric in ACCURACY_METRICS


PRECISION_NAMES = {"off": "fp32", "": "fp32", "bfloat16": "bf16", "float16": "fp16"}  # amp as the records give it


def precision_name(amp: str) -> str:
    """A run's `amp` setting as a precision: "off" -> "fp32", "bf16" -> "bf16"."""
    return PRECISION_NAMES.get(amp, amp)


def arm_labels(data: ReportData, comp: Comparison) -> tuple[str, str, str]:
    """(variant, baseline, context): the labels on the delta's axis and the other axes' labels."""
    ax = data.delta_axis
    context = " / ".join(label for i, label in enumerate(comp.combo) if i != ax)
    return comp.combo[ax], comp.base[ax], context


def effect_label(data: ReportData, comp: Comparison) -> str:
    """"SENet − original" (and the other axes' labels): the effect a comparison measures."""
    variant, base, context = arm_labels(data, comp)
    return f"{variant} − {base}" + (f" ({context})" if context else "")


def comparisons(data: ReportData, second: bool = False) -> list[Comparison]:
    """Every paired comparison `data`'s table reports against its baseline (or, `second`, against the second
    baseline), in table order (rows; in a row, the delta columns; in a column, the quality metrics).
    Baselines compare with nothing; pending rows are listed, with no runs."""
    quality = [m for m in data.metrics if METRICS[m][4] == "quality"]
    if data.delta_axis is None:
        return []
    cols = data.col_values()
    delta_on_cols = data.delta_axis == data.col_axis
    base_col = data.baseline_value(data.col_axis) if data.col_axis is not None else None
    delta_cols = [c for c in cols if not (delta_on_cols and c.label == base_col.label)]
    out = []
    for key in data.row_keys():
        for c in delta_cols:
            combo = data.combo_of(key, c)
            base = data.second_baseline_of(combo) if second else data.baseline_of(combo)
            if base is None:
                continue
            for m in quality:
                s_delta, s_text = data.source_delta(combo, base, m)
                out.append(Comparison(combo=combo, base=base, metric=m, variant=data.per_seed(combo, m),
                                      baseline=data.per_seed(base, m), variant_runs=data.runs(combo),
                                      baseline_runs=data.runs(base), source_delta=s_delta, source_text=s_text,
                                      pending=combo in data.pending))
    return out


_RAW_CACHE: dict[Path, dict[tuple[str, str], str]] = {}


def _raw_reference_text(root: Optional[Path], ref_file: str, row: str, column: str) -> Optional[str]:
    """The value exactly as the CSV writes it (trailing zeros kept: '76.020')."""
    from sebench.report.reference import reference_root

    path = reference_root(root) / (ref_file if ref_file.endswith(".csv") else f"{ref_file}.csv")
    if path not in _RAW_CACHE:
        try:
            with open(path, newline="", encoding="utf-8") as f:
                _RAW_CACHE[path] = {(r["row"], r["column"]): r["value"].strip() for r in csv.DictReader(f)}
        except OSError:
            _RAW_CACHE[path] = {}
    return _RAW_CACHE[path].get((row, column)) or None


def read_runs_csv(results: Path, profile: str) -> list[dict]:
    """results/<profile>/runs.csv as a list of dicts: labels stay text (a label '16' is not the number 16),
    numeric columns become floats (NaN when empty), seed an int."""
    path = Path(results) / profile / "runs.csv"
    if not path.is_file():
        raise UserError(f"no consolidated runs for profile {profile!r}", where=str(path),
                        fix=f"run `sebench collect --results {results}` first (after `sebench run ... "
                            f"--profile {profile}`)")
    with open(path, newline="", encoding="utf-8") as f:
        return _typed(list(csv.DictReader(f)))


def store_rows(results: Path, profile: str) -> list[dict]:
    """The rows runs.csv would hold, read from the run folders now (what a sweep that just ended sees before
    `sebench collect`), typed as read_runs_csv types them."""
    from sebench.store import run_rows

    return _typed([{k: "" if v is None else v if k in NUMERIC_COLUMNS else str(v) for k, v in row.items()}
                   for row in run_rows(results, profile)])


def _typed(rows: list[dict]) -> list[dict]:
    for r in rows:
        for c in NUMERIC_COLUMNS:
            if c in r:
                try:
                    r[c] = float(r[c]) if r[c] not in ("", None) else math.nan
                except ValueError:
                    r[c] = math.nan
        if isinstance(r.get("seed"), float) and not math.isnan(r["seed"]):
            r["seed"] = int(r["seed"])
    return rows


def gather(spec: Spec, profile: str, results: str | Path, *, rows: Optional[list[dict]] = None,
           reference_root: Optional[Path] = None) -> ReportData:
    """Everything a table or plot of `spec` in `profile` needs, from the consolidated run table."""
    results = Path(results)
    if rows is None:
        rows = read_runs_csv(results, profile)
    axes = profile_axes(spec, profile)
    row_idx = next((i for i, a in enumerate(axes) if a.ref == "row"), None)
    col_idx = next((i for i, a in enumerate(axes) if a.ref == "column"), None)
    if row_idx is None:
        row_idx = next((i for i in range(len(axes)) if i != col_idx), None)
    row_axes = ([row_idx] if row_idx is not None else []) + [
        i for i in range(len(axes)) if i not in (row_idx, col_idx)]

    def has_baseline(i):
        return i is not None and any(v.baseline for v in axes[i].values)

    # The delta compares within a row when the columns hold the baseline (SENet vs original in one model
    # row), else within a column against the baseline row, else along any other axis that has one.
    delta_axis = next((i for i in [col_idx, row_idx, *row_axes[1:]] if has_baseline(i)), None)

    runs, pending_rows = expand(spec, profile)
    names = [a.axis for a in axes]
    expected: dict[Combo, list[RunConfig]] = {}
    for rc in runs:
        expected.setdefault(tuple(rc.labels[n] for n in names), []).append(rc)
    pending = {tuple(p.labels[n] for n in names): p.reason for p in pending_rows}
    value_lists = [[v.label for v in a.values] for a in axes]
    # Table order: rows (the row axis, then other axes), columns innermost.
    order = row_axes + ([col_idx] if col_idx is not None else [])
    combos = []
    for prod in itertools.product(*(value_lists[i] for i in order)):
        combo = [None] * len(axes)
        for i, label in zip(order, prod):
            combo[i] = label
        combos.append(tuple(combo))

    expected_ids = {rc.run_id for rcs in expected.values() for rc in rcs}
    finished: dict[Combo, dict[int, Run]] = {}
    failed, unmatched, stale, duplicates = [], [], [], []
    mine = [Run(r) for r in rows if r.get("experiment") == spec.name]
    for run in sorted(mine, key=lambda r: (r.row.get("time") or "", r.row.get("run_id") or "")):
        combo = tuple(run.row.get(f"label.{n}", "") for n in names)
        if run.row.get("status") != "finished":
            failed.append(run)
            continue
        if combo not in expected and combo not in pending:
            unmatched.append(run)
            continue
        seeds = finished.setdefault(combo, {})
        seed = run.row["seed"]
        if seed in seeds:  # same labels and seed twice: keep the spec's own run, else the newest
            keep_old = seeds[seed].row["run_id"] in expected_ids and run.row["run_id"] not in expected_ids
            if keep_old:
                duplicates.append(run)
                continue
            duplicates.append(seeds[seed])
        seeds[seed] = run
    for seeds in finished.values():
        stale.extend(r for r in seeds.values() if r.row["run_id"] not in expected_ids)
    # A failed run that was later retried and finished is history, not a failure.
    done_ids = {r.row["run_id"] for r in mine if r.row.get("status") == "finished"}
    failed = [r for r in failed if r.row["run_id"] not in done_ids]

    metrics = [m for m in spec.source[0].metrics if m in METRICS] or list(DEFAULT_METRICS)
    notes = []
    damaged = [d for d in damaged_runs(results, spec.name) if d.run_id in expected_ids]
    if damaged:  # quarantined records: excluded, but counted where the table is read
        notes.append(f"{len(damaged)} run record(s) of this table are damaged and excluded "
                     f"({', '.join(d.run_id for d in damaged)}): `sebench doctor` lists them with the fix.")
    return ReportData(notes=notes, spec=spec, profile=profile, results=results, axes=axes, row_axes=row_axes,
                      col_axis=col_idx, delta_axis=delta_axis, combos=combos, expected=expected,
                      pending=pending, finished=finished, failed=failed, unmatched=unmatched, stale=stale,
                      duplicates=duplicates, metrics=metrics, reference_root=reference_root)


# ---- header facts -----------------------------------------------------------------------------------------

def unique(values) -> list:
    out = []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
            continue
        if v not in out:
            out.append(v)
    return out


def fmt_num(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:g}"


def hardware_label(runs: list[Run]) -> str:
    items = [run_hardware(r) for r in runs]
    return "; ".join(unique(items)) or "unknown (no finished runs)"


def run_hardware(run: Run) -> str:
    return hardware_text(run.row.get("device_name"), run.row.get("device"), run.row.get("threads"))


def hardware_by_cell(data: ReportData) -> Optional[str]:
    """Which cells (labels and seeds) trained on which machine, when the table's runs span several (the
    header lists them, not who ran where); None when one machine trained them all."""
    cells: dict[str, dict[str, list]] = {}
    for combo in data.combos:
        for seed, run in sorted(data.runs(combo).items()):
            cells.setdefault(run_hardware(run), {}).setdefault(data.short_label(combo), []).append(seed)
    if len(cells) < 2:
        return None

    def seeds_text(seeds: list) -> str:
        return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(fmt_num(s) for s in seeds)

    return "; ".join(f"{hw}: " + ", ".join(f"{label} ({seeds_text(seeds)})" for label, seeds in by_label.items())
                     for hw, by_label in cells.items())


def data_label(runs: list[Run]) -> str:
    return "; ".join(unique(r.row.get("dataset") for r in runs)) or "unknown (no finished runs)"


def seeds_label(data: ReportData) -> str:
    seeds = sorted(unique(r.row["seed"] for r in data.all_runs()))
    expected = sorted(unique(rc.seed for rcs in data.expected.values() for rc in rcs))
    text = ", ".join(map(str, seeds)) or "none"
    if expected and expected != seeds:
        text += f" (the profile asks for {', '.join(map(str, expected))})"
    return text


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
