"""Two profiles of one spec, paired run for run: what the one recipe change between them does.

    sebench report cifar10_se_vs_baseline --profile full40_bf16 --paired-with full40
    -> results/full40_bf16/tables/cifar10_se_vs_baseline_vs_full40.md | .tex | .csv

A pair is the same sweep labels and seed in both profiles (the full40_bf16 profile repeats full40 with
`amp: bf16`; cifar100's full40 repeats full12 with `epochs: 40`). Each row gives both profiles' final-epoch
numbers and Δ = profile − against, paired by seed with its 95% interval, plus the minutes per run; the header
names every recipe field in which the pairs differ, read from the runs' expanded configs, so that a reader sees
what the delta measures (and whether anything else changed with it).

Below the rows, one "effect" row per comparison the spec's own table makes (a variant against its baseline,
e.g. SENet − original): that effect in each profile, paired by seed, and how the profile change alters it,
Δ = (variant − baseline in profile) − (variant − baseline in against), paired by seed over the seeds with all
four runs (a difference in differences). That is the claim "SE's effect changes with schedule length" (or
with precision), which neither profile's table can make alone.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sebench.errors import UserError, choice_error
from sebench.report.data import (METRICS, Combo, Comparison, ReportData, comparisons, data_label, duration,
                                 effect_label, gather, hardware_by_cell, hardware_label, precision_name,
                                 seeds_label, trained_seconds)
from sebench.report.stats import INTERVAL_METHOD, mean_std, paired_delta
from sebench.report.tables import Table, format_delta, format_measured
from sebench.spec import Spec

PAIR_CSV_COLUMNS = ["experiment", "profile", "against", "kind", "row", "metric", "unit", "n", "mean", "std",
                    "n_against", "mean_against", "std_against", "delta_n", "delta", "delta_low", "delta_high",
                    "seeds", "minutes_per_run", "minutes_per_run_against", "interval"]


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def recipe_differences(a: ReportData, b: ReportData, combos: list[Combo]) -> dict[str, tuple[set, set]]:
    """field -> (values in a, values in b) for every identity field in which paired configs differ (the profile
    name itself aside)."""
    diffs: dict[str, tuple[set, set]] = {}
    for combo in combos:
        theirs = {rc.seed: rc for rc in b.expected.get(combo, [])}
        for rc in a.expected.get(combo, []):
            other = theirs.get(rc.seed)
            if other is None:
                continue
            fa, fb = _flat(rc.identity()), _flat(other.identity())
            for key in sorted(set(fa) | set(fb)):
                if key != "profile" and fa.get(key) != fb.get(key):
                    va, vb = diffs.setdefault(key, (set(), set()))
                    va.add(repr(fa.get(key)))
                    vb.add(repr(fb.get(key)))
    return diffs


# The recipe fields in which two profiles of one spec may differ and still be "the same runs, one change" for
# the claims ledger: full40_bf16 is cifar10's full40 with `amp: bf16` (precision), cifar100's full40 is its
# full12 with `epochs: 40` (schedule length). Each orders the pair: Δ = amp on − off, longer − shorter.
PAIRED_FIELDS = ("amp", "epochs")


@dataclass(frozen=True)
class ProfilePair:
    """Two profiles of one spec whose runs repeat each other with one recipe field changed."""

    changed: ReportData  # Δ = changed − reference
    reference: ReportData
    field: str  # one of PAIRED_FIELDS
    values: tuple[str, str]  # the field's value in changed, in reference (as the configs give it)

    def side(self, data: ReportData) -> str:
        """What the field is in one profile, in words: "bf16", "fp32", "40 epochs"."""
        value = self.values[0 if data is self.changed else 1]
        return precision_name(value) if self.field == "amp" else f"{value} {self.field}"


def shared_combos(a: ReportData, b: ReportData) -> list[Combo]:
    return [c for c in a.combos if c in b.combos and (c in a.expected or c in b.expected)]


def profile_pair(a: ReportData, b: ReportData) -> Optional[ProfilePair]:
    """The pair when two profiles of one spec repeat each other's runs with exactly one of PAIRED_FIELDS
    changed, one value on each side, else None."""
    combos = shared_combos(a, b)
    diffs = recipe_differences(a, b, combos) if combos else {}
    if len(diffs) != 1:
        return None
    (name, (va, vb)), = diffs.items()
    if name not in PAIRED_FIELDS or len(va) != 1 or len(vb) != 1:
        return None
    x, y = ast.literal_eval(next(iter(va))), ast.literal_eval(next(iter(vb)))
    a_first = y == "off" if name == "amp" else x > y
    values = (str(x), str(y)) if a_first else (str(y), str(x))
    return ProfilePair(a, b, name, values) if a_first else ProfilePair(b, a, name, values)


def pair_comparisons(a: ReportData, b: ReportData) -> list[Comparison]:
    """The comparisons a paired table reports: each row and quality metric, Δ = a − b by seed."""
    quality = [m for m in a.metrics if METRICS[m][4] == "quality"]
    return [Comparison(combo=c, base=c, metric=m, variant=a.per_seed(c, m), baseline=b.per_seed(c, m),
                       variant_runs=a.runs(c), baseline_runs=b.runs(c))
            for c in shared_combos(a, b) for m in quality]


@dataclass(frozen=True)
class EffectChange:
    """A design's effect (one comparison of the spec's own table) in two profiles, and its change.
    `change.variant` / `change.baseline` hold the effect by seed in a / in b, so `change.diffs` are the
    per-seed differences in differences."""

    in_a: Comparison  # variant vs baseline in profile a
    in_b: Comparison  # the same in profile b
    change: Comparison


def effect_changes(a: ReportData, b: ReportData) -> list[EffectChange]:
    """Every comparison of a's table that b's table makes too (same combo, baseline and metric), with both
    effects by seed; only seeds with all four runs enter `change`."""
    theirs = {(c.combo, c.base, c.metric): c for c in comparisons(b)}
    out = []
    for ca in comparisons(a):
        cb = theirs.get((ca.combo, ca.base, ca.metric))
        if cb is None:
            continue
        ea = {s: ca.variant[s] - ca.baseline[s] for s in ca.seeds}
        eb = {s: cb.variant[s] - cb.baseline[s] for s in cb.seeds}
        out.append(EffectChange(ca, cb, Comparison(combo=ca.combo, base=ca.base, metric=ca.metric, variant=ea,
                                                   baseline=eb, variant_runs=ca.variant_runs,
                                                   baseline_runs=cb.variant_runs)))
    return out


def _sd(comp: Comparison) -> Optional[float]:
    """Sample std of a comparison's per-seed differences (None with fewer than two)."""
    _, sd, n = mean_std(list(comp.diffs))
    return sd if n > 1 else None


def _minutes(data: ReportData, combo: Combo) -> Optional[float]:
    walls = trained_seconds(data.runs(combo).values())
    return sum(walls) / len(walls) / 60 if walls else None


def gather_pair(spec: Spec, profile: str, against: str, results: str | Path) -> tuple[ReportData, ReportData]:
    """The two profiles' data for `report --profile P --paired-with Q`; a mistake in either name ends in one
    message."""
    for name, field in ((profile, "--profile"), (against, "--paired-with")):
        if name not in spec.profiles:
            raise choice_error("profile", name, spec.profiles, where=spec.path, field=field)
    if profile == against:
        raise UserError(f"--paired-with names the report's own profile {profile!r}", where=spec.path,
                        field="--paired-with", fix="name the other profile of the pair, e.g. `full40`")
    a, b = gather(spec, profile, results), gather(spec, against, results)
    combos = shared_combos(a, b)
    if not combos:
        raise UserError(f"profiles {profile!r} and {against!r} of {spec.name} share no sweep row, so no run pairs",
                        where=spec.path, field="profiles",
                        fix="pair two profiles whose sweeps have the same labels (e.g. `full40_bf16` with `full40`)")
    return a, b


def pair_table(spec: Spec, a: ReportData, b: ReportData) -> Table:
    """Profile a's runs beside profile b's of the same labels and seed (two profiles of `spec`)."""
    profile, against = a.profile, b.profile
    combos = shared_combos(a, b)
    a, b = a.restricted(combos), b.restricted(combos)  # a row only one profile sweeps is in neither's header
    quality = [m for m in a.metrics if METRICS[m][4] == "quality"]
    diffs = recipe_differences(a, b, combos)
    differs = "; ".join(f"{k}: {', '.join(sorted(va))} vs {', '.join(sorted(vb))}" for k, (va, vb) in diffs.items())

    columns = ["row"]
    for m in quality:
        head = METRICS[m][0]
        columns += [f"{head} `{profile}`", f"{head} `{against}`", f"Δ {head} ({profile} − {against})"]
    columns += [f"min/run `{profile}`", f"min/run `{against}`"]
    rows, records = [], []
    for combo in combos:
        label = a.short_label(combo)
        cells = [label]
        ma, mb = _minutes(a, combo), _minutes(b, combo)
        for m in quality:
            va, vb = a.per_seed(combo, m), b.per_seed(combo, m)
            ta, mean_a, std_a, n_a = format_measured(va, m, len(a.expected_seeds(combo)))
            tb, mean_b, std_b, n_b = format_measured(vb, m, len(b.expected_seeds(combo)))
            delta = paired_delta(va, vb)
            cells += [ta if n_a else "not run", tb if n_b else "not run", format_delta(delta, m) or "no pair yet"]
            records.append({"experiment": spec.name, "profile": profile, "against": against, "kind": "arm",
                            "row": label,
                            "metric": m, "unit": METRICS[m][0], "n": n_a, "mean": mean_a, "std": std_a,
                            "n_against": n_b, "mean_against": mean_b, "std_against": std_b,
                            "delta_n": delta.n, "delta": delta.mean if delta.n else None,
                            "delta_low": delta.low, "delta_high": delta.high,
                            "seeds": " ".join(map(str, delta.seeds)), "minutes_per_run": ma,
                            "minutes_per_run_against": mb, "interval": INTERVAL_METHOD})
        cells += [f"{ma:.1f}" if ma is not None else "-", f"{mb:.1f}" if mb is not None else "-"]
        rows.append(cells)
    changes = [e for e in effect_changes(a, b) if e.in_a.seeds or e.in_b.seeds]  # measured in one at least
    by_label: dict[str, dict[str, EffectChange]] = {}
    for e in changes:
        by_label.setdefault(effect_label(a, e.change), {})[e.change.metric] = e
    for label, by_metric in by_label.items():
        cells = [f"effect: {label}"]
        for m in quality:
            e = by_metric.get(m)
            if e is None:
                cells += ["-", "-", "-"]
                continue
            da, db = paired_delta(e.in_a.variant, e.in_a.baseline), paired_delta(e.in_b.variant, e.in_b.baseline)
            change = paired_delta(e.change.variant, e.change.baseline)
            cells += [format_delta(da, m) or "no pair yet", format_delta(db, m) or "no pair yet",
                      format_delta(change, m) or "no seed with all four runs yet"]
            records.append({"experiment": spec.name, "profile": profile, "against": against, "kind": "effect",
                            "row": label, "metric": m, "unit": METRICS[m][0], "n": da.n,
                            "mean": da.mean if da.n else None, "std": _sd(e.in_a), "n_against": db.n,
                            "mean_against": db.mean if db.n else None, "std_against": _sd(e.in_b),
                            "delta_n": change.n, "delta": change.mean if change.n else None,
                            "delta_low": change.low, "delta_high": change.high,
                            "seeds": " ".join(map(str, change.seeds)), "minutes_per_run": None,
                            "minutes_per_run_against": None, "interval": INTERVAL_METHOD})
        rows.append(cells + ["-", "-"])

    runs_a, runs_b = a.all_runs(), b.all_runs()
    header = [
        ("Pairs", f"each run of `{profile}` with the run of `{against}` that has the same sweep labels and seed"),
        ("Differs in", differs or "nothing but the profile's name: the pairs are the same recipe"),
        ("Data", f"`{profile}`: {data_label(runs_a)}; `{against}`: {data_label(runs_b)}"),
        ("Hardware", f"`{profile}`: {hardware_label(runs_a)}; `{against}`: {hardware_label(runs_b)}"),
        ("Seeds", f"`{profile}`: {seeds_label(a)}; `{against}`: {seeds_label(b)}"),
        ("Statistics", "final-epoch test numbers, mean ± sample std over seeds; Δ paired by seed over the seeds "
                       f"both profiles finished, with its 95% interval ({INTERVAL_METHOD}); none with one pair. "
                       "min/run: mean wall time of a finished run (training and evaluation epochs)"),
    ]
    if changes:
        header.append(("Effect rows", f"a comparison of the spec's own table (variant − baseline), paired by seed "
                                      f"in `{profile}` and in `{against}`; Δ = the effect in `{profile}` − the "
                                      f"effect in `{against}`, paired by seed over the seeds with all four runs "
                                      f"(does the profile change alter the effect?)"))
    footnotes = []
    if hardware_label(runs_a) != hardware_label(runs_b):
        footnotes.append("The two profiles' runs did not all train on the same hardware and threads: minutes per "
                         "run compare those as well as the recipes.")
    for name, side in ((profile, a), (against, b)):
        if (where := hardware_by_cell(side)) is not None:
            footnotes.append(f"`{name}` trained on more than one machine: {where}.")
    total = sum(trained_seconds(runs_a + runs_b))
    footnotes.append(f"Compute behind this table: {duration(total)} over {len(runs_a) + len(runs_b)} runs.")
    title = f"{spec.title}: `{profile}` paired with `{against}`"
    return Table(name=f"{spec.name}_vs_{against}", title=title, profile=profile, header=header, columns=columns,
                 rows=rows, footnotes=footnotes, records=records, n_finished=len(runs_a),
                 csv_columns=PAIR_CSV_COLUMNS)
