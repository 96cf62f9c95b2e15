"""Results tables laid out like the source's: measured mean +- std beside the source's number, paired deltas
against the same-recipe baseline with a 95% interval, the source's delta and a verdict per claim.

    data = gather(spec, profile, results)      # sebench.report.data
    table = build_table(data)
    table.markdown(); table.latex(); table.csv()

Rows are the values of the spec's 'row' axis (or its first axis; other axes that are neither row nor column
join the row label); columns are, for each value of the 'column' axis (if any), the spec's metrics
(`source.metrics`, in that order), each followed by the source's number. Nothing in a table depends on when
or where it was built, so a committed table changes only when the runs or the spec do.
"""

from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass, field
from typing import Optional

from sebench.report.data import (ACCURACY_METRICS, METRICS, Combo, Comparison, ReportData, comparisons, data_label,
                                 duration, fmt_num, hardware_by_cell, hardware_label, profile_caveat, seeds_label,
                                 trained_seconds, unique)
from sebench.report.stats import INTERVAL_METHOD, PairedDelta, by_seed, mean_std, paired_delta
from sebench.report.verdicts import (BETTER, EQUIVALENT, KINDS, RULES, WORSE, Judgement, Question, judge_family,
                                     margin_for)

VERDICTS = KINDS  # the verdict kinds a table counts (sebench.report.verdicts defines each)

CSV_COLUMNS = ["experiment", "profile", "row", "column", "metric", "unit", "status", "n", "n_expected", "seeds",
               "mean", "std", "source", "source_cell", "baseline", "delta_n", "delta", "delta_low",
               "delta_high", "source_delta", "verdict", "interval"]
# A table with a second baseline (SweepValue.second_baseline) adds the same delta fields against it.
SECOND = "second_"
SECOND_COLUMNS = [SECOND + k for k in ("baseline", "delta_n", "delta", "delta_low", "delta_high", "source_delta",
                                       "verdict")]


@dataclass
class Table:
    name: str
    title: str
    profile: str
    header: list[tuple[str, str]]
    columns: list[str]
    rows: list[list[str]]
    footnotes: list[str]
    records: list[dict]
    verdicts: dict[str, int] = field(default_factory=dict)
    n_finished: int = 0
    n_failed: int = 0
    n_planned: int = 0  # the runs the spec's profile expands to (pending rows not counted)
    csv_columns: list[str] = field(default_factory=lambda: list(CSV_COLUMNS))  # the record keys .csv writes

    # ---- renderers ---------------------------------------------------------------------------------------
    def markdown(self) -> str:
        out = [f"# {self.title}", "", f"`{self.name}`, profile `{self.profile}`", ""]
        out += [f"- **{k}:** {v}" for k, v in self.header]
        out += ["", _md_row(self.columns), _md_row(["---"] + ["---:"] * (len(self.columns) - 1))]
        out += [_md_row(r) for r in self.rows]
        if self.footnotes:
            out += ["", "Notes:", ""]
            out += [f"{i}. {n}" for i, n in enumerate(self.footnotes, 1)]
        return "\n".join(out) + "\n"

    def latex(self) -> str:
        """A booktabs table (needs \\usepackage{booktabs}); header facts in the caption, notes below."""
        ncol = len(self.columns)
        caption = _tex(self.title) + ". " + " ".join(f"{_tex(k)}: {_tex(v.rstrip('.'))}." for k, v in self.header)
        lines = [
            f"% {self.name} (profile {self.profile}), written by `sebench report`; needs \\usepackage{{booktabs}}",
            "\\begin{table}[tbp]",
            "\\centering",
            "\\scriptsize",
            f"\\caption{{{caption}}}",
            f"\\label{{tab:{_tex_label(self.name)}-{_tex_label(self.profile)}}}",
            "\\begin{tabular}{l" + "r" * (ncol - 1) + "}",
            "\\toprule",
            " & ".join(_tex(c) for c in self.columns) + " \\\\",
            "\\midrule",
        ]
        lines += [" & ".join(_tex(c) for c in r) + " \\\\" for r in self.rows]
        lines += ["\\bottomrule", "\\end{tabular}"]
        if self.footnotes:
            lines += ["", "\\par\\smallskip\\raggedright"]
            lines += [f"{i}. {_tex(n)}\\\\" for i, n in enumerate(self.footnotes, 1)]
        lines += ["\\end{table}"]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        """One line per (row, column, metric): the numbers behind every cell, machine-readable."""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.csv_columns, lineterminator="\n")
        writer.writeheader()
        for rec in self.records:
            writer.writerow({k: _csv_value(rec.get(k)) for k in self.csv_columns})
        return buf.getvalue()


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else repr(round(v, 10))
    return v


def _md_row(cells) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                "±": r"$\pm$", "Δ": r"$\Delta$", "−": r"$-$", "×": r"$\times$", "–": "--", "—": "---",
                "≥": r"$\geq$", "≤": r"$\leq$", "→": r"$\rightarrow$", "`": "", "<": r"$<$", ">": r"$>$"}


def _tex(text: str) -> str:
    text = re.sub(r'"([^"]*)"', "\x01\\1\x02", str(text))  # "quoted" -> ``quoted''
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in text).replace("\x01", "``").replace("\x02", "''")


def _tex_label(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")


# ---- cell formatting ----------------------------------------------------------------------------------------

def format_measured(values: dict[int, float], metric: str, n_expected: int) -> tuple[str, float, float, int]:
    _, _, _, d, kind = METRICS[metric]
    m, sd, n = mean_std([values[s] for s in sorted(values)])
    of = f" of {n_expected}" if n_expected > n else ""
    if kind == "cost" and (n == 1 or sd < 10 ** -(d + 2)):
        return f"{m:.{d}f}", m, sd, n
    if n == 1:
        return f"{m:.{d}f} (n=1{of})", m, sd, n
    return f"{m:.{d}f} ± {sd:.{d}f} (n={n}{of})", m, sd, n


def format_delta(delta: PairedDelta, metric: str) -> str:
    d = METRICS[metric][3]
    if delta.n == 0:
        return ""
    def num(x: float) -> str:  # round first: float noise like -4e-16 must not print as "-0.00"
        return f"{round(x, d) or 0.0:+.{d}f}"

    if delta.low is None:
        why = "equal per-seed differences, no interval" if delta.n > 1 else "no interval"
        return f"{num(delta.mean)} (n={delta.n}, {why})"
    return f"{num(delta.mean)} [{num(delta.low)}, {num(delta.high)}] (n={delta.n})"


# ---- building ---------------------------------------------------------------------------------------------

def build_table(data: ReportData) -> Table:
    spec, source = data.spec, data.source
    metrics = data.metrics
    quality = [m for m in metrics if METRICS[m][4] == "quality"]
    has_source = {m: bool(source.reference and m in source.metrics) for m in metrics}
    cols = data.col_values()
    base_col = data.baseline_value(data.col_axis) if data.col_axis is not None else None
    delta_on_cols = data.delta_axis is not None and data.delta_axis == data.col_axis
    base_label = data.baseline_value(data.delta_axis).label if data.delta_axis is not None else None

    def colname(c, text):
        return f"{c.label} {text}" if c is not None else text

    # ---- columns
    row_title = " / ".join(data.axes[i].axis for i in data.row_axes) or "configuration"
    columns = [row_title]
    for c in cols:
        for m in metrics:
            columns.append(colname(c, METRICS[m][0]))
            if has_source[m]:
                columns.append("source")
    delta_cols = [c for c in cols if not (delta_on_cols and c.label == base_col.label)] if (
        data.delta_axis is not None) else []
    for c in delta_cols:
        for m in quality:
            name = METRICS[m][0]
            if delta_on_cols:
                columns.append(f"Δ {name} {c.label} − {base_label} (95% CI)")
            else:
                columns.append(f"Δ {name} vs {base_label} (95% CI)" + (f", {c.label}" if c is not None else ""))
            columns += ["source Δ", "verdict"]
    second = data.second_baseline_value()  # never on a column axis (the spec checks), so delta_on_cols is False
    second_cols = delta_cols if second is not None else []
    for c in second_cols:
        for m in quality:
            columns += [f"Δ {METRICS[m][0]} vs {second.label} (95% CI)" + (f", {c.label}" if c is not None else ""),
                        "source Δ", "verdict"]

    # ---- rows
    rows, records, footnotes = [], [], []
    verdicts = dict.fromkeys(VERDICTS, 0)
    source_cache: dict[tuple[Combo, str], tuple[Optional[float], str, Optional[str]]] = {}

    def src(combo, m):
        if (combo, m) not in source_cache:
            source_cache[(combo, m)] = data.source_cell(combo, m)
        return source_cache[(combo, m)]

    judged = {(comp.combo, comp.metric): (comp, j) for comp, j in judge_table(data)}
    judged_second = {(comp.combo, comp.metric): (comp, j) for comp, j in judge_table(data, second=True)}
    failed_combos = {tuple(r.row.get(f"label.{a.axis}", "") for a in data.axes) for r in data.failed}
    for key in data.row_keys():
        label = data.row_label(key)
        first = data.combo_of(key, cols[0])
        if data.delta_axis is not None and not delta_on_cols and data.is_baseline(first):
            label += " (baseline)"
        cells = [label]
        for c in cols:
            combo = data.combo_of(key, c)
            for m in metrics:
                values = data.per_seed(combo, m)
                n_exp = len(data.expected_seeds(combo))
                rec = _record(data, key, c, m)
                rec["n_expected"] = n_exp
                if combo in data.pending:
                    text, rec["status"] = "pending", "pending"
                elif not values:
                    text = "failed" if combo in failed_combos else "not run"
                    rec["status"] = text
                else:
                    text, rec["mean"], rec["std"], rec["n"] = format_measured(values, m, n_exp)
                    rec["status"] = "measured" if rec["n"] >= n_exp else "partial"
                    rec["seeds"] = " ".join(map(str, sorted(values)))
                cells.append(text)
                if has_source[m]:
                    value, text, where = src(combo, m)
                    cells.append(text)
                    rec["source"], rec["source_cell"] = value, where or ""
                records.append(rec)
        for prefix, judged_here, base_of, cs in (("", judged, data.baseline_of, delta_cols),
                                                  (SECOND, judged_second, data.second_baseline_of, second_cols)):
            for c in cs:
                combo = data.combo_of(key, c)
                if base_of(combo) is None:
                    is_base = data.is_baseline(combo) if not prefix else combo[data.delta_axis] == second.label
                    cells += ["baseline" if is_base else "", "", ""] * len(quality)
                    continue
                for m in quality:
                    rec = next(r for r in records if r["row"] == data.row_label(key)
                               and r["column"] == (c.label if c is not None else "") and r["metric"] == m)
                    comp, j = judged_here[(combo, m)]
                    cells += _delta_cells(data, rec, comp, j, prefix)
                    verdicts[j.verdict.kind] += 1
        rows.append(cells)

    footnotes += _footnotes(data, metrics)
    footnotes += se_effect_notes(data, judged, quality)
    header = _header(data, metrics, base_label, delta_on_cols)
    return Table(name=spec.name, title=spec.title, profile=data.profile, header=header, columns=columns,
                 rows=rows, footnotes=footnotes, records=records, verdicts=verdicts,
                 n_finished=len(data.all_runs()), n_failed=len(data.failed),
                 n_planned=sum(len(rcs) for rcs in data.expected.values()),
                 csv_columns=CSV_COLUMNS + (SECOND_COLUMNS if second is not None else []))


def _delta_cells(data: ReportData, rec: dict, comp: Comparison, j: Judgement, prefix: str) -> list[str]:
    """A comparison's three cells (Δ with its interval, the source's Δ, the verdict), its numbers written into
    the cell's record under `prefix` ('' for the baseline, SECOND for the second baseline)."""
    rec[prefix + "baseline"] = data.label_text(comp.base)
    rec["interval"] = INTERVAL_METHOD
    d = paired_delta(by_seed(comp.variant.items()), by_seed(comp.baseline.items()))
    if d.n:
        rec.update({prefix + "delta_n": d.n, prefix + "delta": d.mean, prefix + "delta_low": d.low,
                    prefix + "delta_high": d.high})
    rec[prefix + "source_delta"], rec[prefix + "verdict"] = comp.source_delta, j.verdict.text
    s_text = comp.source_text or ""
    if comp.pending:
        return ["pending", s_text, j.verdict.text]
    measured = format_delta(d, comp.metric) or (
        "no paired seeds" if data.runs(comp.combo) and data.runs(comp.base) else "not run")
    return [measured, s_text, j.verdict.text]


def _removes_se(value) -> bool:
    """A sweep value that trains the network without SE (`model.se: null`, dotted or nested)."""
    sets = value.set
    if "model.se" in sets:
        return sets["model.se"] is None
    model = sets.get("model")
    return isinstance(model, dict) and "se" in model and model["se"] is None


def se_effect_notes(data: ReportData, judged: dict, quality: list[str]) -> list[str]:
    """How to read an ablation whose deltas are against standard SE: they say which design choice removes a
    harm or keeps a gain only where SE's own effect (standard SE − the no-SE context row) is resolved. One
    note per no-SE cell on the first quality metric, from the table's own verdicts (Holm within the table)."""
    if data.delta_axis is None or not quality:
        return []
    axis = data.axes[data.delta_axis]
    base = data.baseline_value(data.delta_axis)
    no_se = {v.label for v in axis.values if _removes_se(v)}
    if base is None or _removes_se(base) or not no_se:
        return []
    metric, notes = quality[0], []
    d = METRICS[metric][3]
    for (combo, m), (comp, j) in judged.items():
        if m != metric or combo[data.delta_axis] not in no_se or not comp.seeds:
            continue
        where = ", ".join(f"{a.axis}={label}" for i, (a, label) in enumerate(zip(data.axes, combo))
                          if i != data.delta_axis)
        effect = f"{-j.mean:+.{d}f}" + (f" [{-j.high:+.{d}f}, {-j.low:+.{d}f}]" if j.low is not None else "")
        head = (f"SE's own effect here{f' ({where})' if where else ''}: {base.label} − {combo[data.delta_axis]} "
                f"= {effect} {METRICS[metric][0]} (n={j.n}; the no-SE row's verdict against {base.label}: "
                f"{j.verdict.text}).")
        others = {kind: [c[data.delta_axis] for (c, mm), (cc, jj) in judged.items()
                         if mm == metric and jj.vs_zero.kind == kind and c[data.delta_axis] not in no_se
                         and cc.base == comp.base]  # the same cell of the other axes: the same baseline
                  for kind in (BETTER, WORSE)}
        kind = j.vs_zero.kind
        if kind == BETTER:  # no SE beats standard SE: SE hurts
            fix = (f"the rows resolved better than {base.label} ({', '.join(others[BETTER])}) remove at least "
                   "part of that harm" if others[BETTER] else
                   f"no row is resolved better than {base.label}, so no design choice here is shown to remove it")
            notes.append(f"{head} Standard SE hurts in this setting; {fix}.")
        elif kind == WORSE:  # standard SE beats no SE: SE helps
            lose = (f"the rows resolved worse than {base.label} ({', '.join(others[WORSE])}) lose at least part "
                    "of that gain" if others[WORSE] else f"no row is resolved worse than {base.label}")
            notes.append(f"{head} Standard SE helps in this setting; {lose}.")
        elif kind == EQUIVALENT:
            notes.append(f"{head} Standard SE is equivalent to no SE here: the other rows compare design choices "
                         "of an SE block without an effect of its own beyond the margin.")
        else:
            notes.append(f"{head} SE's own effect is not resolved here, so the other rows say which design "
                         f"choices differ from {base.label}, not whether they remove a harm or keep a gain.")
    return notes


def judge_table(data: ReportData, second: bool = False) -> list[tuple[Comparison, Judgement]]:
    """Every paired comparison of `data`'s table with its verdicts (sebench.report.verdicts); the table's
    comparisons against its baseline are the family for Holm's adjustment, those against its second baseline
    (`second`) another. The ledger (sebench.report.claims) reads the same."""
    comps = comparisons(data, second)
    margins = data.spec.equivalence_margin
    questions = [Question(diffs=c.diffs, higher_is_better=c.higher_is_better, source_delta=c.source_delta,
                          margin=margin_for(c.metric, margins), decimals=METRICS[c.metric][3]) for c in comps]
    return list(zip(comps, judge_family(questions)))


def _record(data: ReportData, key: Combo, col, metric: str) -> dict:
    unit = {"params_m": "M params", "gflops": "GFLOPs (multiply-adds)", "test_loss": "loss"}.get(
        metric, "% accuracy" if metric in ACCURACY_METRICS else "% error")
    return {"experiment": data.spec.name, "profile": data.profile, "row": data.row_label(key),
            "column": col.label if col is not None else "", "metric": metric, "unit": unit, "n": 0}


def _header(data: ReportData, metrics: list[str], base_label: Optional[str], delta_on_cols: bool
            ) -> list[tuple[str, str]]:
    spec, runs = data.spec, data.all_runs()
    sources = "; ".join(
        f"{s.file}, \"{s.table}\"" + (f" (reference numbers: results/reference/{s.reference})"
                                            if s.reference else " (no reference numbers transcribed)")
        for s in spec.source)
    prof = spec.profiles[data.profile]
    caveat = profile_caveat(data.profile)
    profile = f"`{data.profile}`: " + (f"{prof.description.rstrip('.')}. " if prof.description else "") + \
        (caveat[0].upper() + caveat[1:] + "." if caveat and not (data.profile == "paper" and prof.description)
         else "")
    epochs = ", ".join(fmt_num(v) for v in unique(r.row.get("epochs") for r in runs)) or "-"
    batch = ", ".join(fmt_num(v) for v in unique(r.row.get("batch_size") for r in runs)) or "-"
    reused = [r for r in runs if r.row.get("reused_from")]  # trained once, for another experiment
    wall = trained_seconds(runs)
    total = sum(wall)
    seconds = f" ({total:.0f} s)" if total >= 90 else ""
    compute = (f"{duration(total)}{seconds} over {len(wall)} finished runs (sum of wall_s: training and "
               f"evaluation epochs; setup and the throughput benchmark not counted)") if wall else "none yet"
    if reused:
        origins = ", ".join(sorted(unique(str(r.row["reused_from"]).split("/")[0] for r in reused)))
        compute += (f"; {len(reused)} more run(s) reused from identical runs of {origins} (same recipe and "
                    f"seed: `reused_from` in runs.csv), not counted")
    commits = ", ".join(c[:12] for c in unique(r.row.get("git_commit") for r in runs)) or "-"
    torch_v = ", ".join(unique(r.row.get("torch") for r in runs)) or "-"
    header = [
        ("Source", sources),
        ("Profile", profile),
        ("Data", data_label(runs)),
        ("Hardware", hardware_label(runs)),
        ("Recipe", f"epochs {epochs}; training batch size {batch}; seeds {seeds_label(data)}"),
        ("Compute", compute),
        ("Code", f"git {commits}; torch {torch_v}"),
    ]
    stats = ("each cell is the final-epoch test number (never the best epoch), mean ± sample std over seeds "
             "(n = seeds that finished; 'n=2 of 3' when some are missing)")
    if data.delta_axis is not None:
        where = ("in the same row" if delta_on_cols else "in the same column" if data.col_axis is not None
                 else "")
        stats += (f"; Δ = variant − same-recipe baseline ('{base_label}' {where}".rstrip() +
                  f"), paired by seed, with its 95% interval ({INTERVAL_METHOD}); source Δ is the same "
                  "difference of the source's numbers; verdicts as in the claims ledger (results/CLAIMS.md, "
                  "sebench/report/verdicts.py), this table being the family for Holm's adjustment: "
                  + "; ".join(RULES) + "; not tested = no paired runs")
        if (second := data.second_baseline_value()) is not None:
            stats += (f"; the columns 'vs {second.label}' are the same paired Δ against the second baseline "
                      f"'{second.label}' (same recipe otherwise), their verdicts a Holm family of their own")
        if data.spec.equivalence_margin:
            stats += ("; this spec's equivalence margins: " +
                      ", ".join(f"{METRICS[m][0]} ±{v:g}" for m, v in data.spec.equivalence_margin.items()))
    else:
        stats += "; no value is marked as the baseline, so no deltas"
    header.append(("Statistics", stats))
    acc = [m for m in metrics if m in ACCURACY_METRICS]
    if acc:
        header.append(("Accuracy", "the source reports accuracy (%); our accuracy = 100 − our error "
                       f"({', '.join(METRICS[m][0] for m in acc)}), so higher is better and Δ > 0 favours "
                       "the variant"))
    return header


def _footnotes(data: ReportData, metrics: list[str]) -> list[str]:
    notes = [f"Spec note: {n}" for n in data.spec.notes]
    pending_rows: dict[tuple[str, str], list[str]] = {}
    for combo, reason in data.pending.items():
        key = data.row_label(data.row_key(combo))
        cols = pending_rows.setdefault((key, reason), [])
        if data.col_axis is not None:
            cols.append(combo[data.col_axis])
    for (row, reason), cols in pending_rows.items():
        every = data.col_axis is None or len(cols) == len(data.axes[data.col_axis].values)
        where = row if every else f"{row} ({', '.join(cols)})"
        notes.append(f"Pending: {where}: {reason.rstrip('.')}.")
    # Rows the profile replaces: the source has no number for a stand-in.
    spec_axes = {a.axis: a for a in data.spec.sweep}
    for a in data.axes:
        original = spec_axes[a.axis]
        if a.values != original.values and any(v.ref for v in original.values):
            stand = ", ".join(v.label for v in a.values if v.ref is None)
            if stand:
                notes.append(f"The {data.profile} profile replaces the source's {a.axis} values with stand-ins "
                             f"({stand}); the source has no numbers for them, so their source cells stay empty "
                             "and they test no claim.")
    if any(METRICS[m][4] == "cost" for m in metrics):
        notes.append("Params and GFLOPs are counted from the model (GFLOPs = multiply-adds per image at the run's "
                     "input size), not measured; they are the same for every seed.")
    for r in data.failed:
        labels = ", ".join(f"{a.axis}={r.row.get(f'label.{a.axis}', '')}" for a in data.axes)
        reason = (r.row.get("reason") or "no reason recorded").strip()
        notes.append(f"Failed run {r.row.get('run_id')} ({labels}, seed {fmt_num(r.row.get('seed'))}): "
                     f"{reason.rstrip('.')}.")
    for r in data.stale:
        notes.append(f"Run {r.row['run_id']} ({data.label_text(_combo(data, r))}, seed {r.row['seed']}) was made "
                     "with another recipe than the spec now gives (an edited spec or `--set` overrides); it "
                     "is shown, but re-run it to be sure.")
    if data.duplicates:
        notes.append("Not used: " + "; ".join(_duplicate_text(data, r) for r in data.duplicates) + ".")
    if data.unmatched:
        ids = ", ".join(f"{r.row['run_id']} ({data.label_text(_combo(data, r))})" for r in data.unmatched)
        notes.append(f"In the store but no longer in the spec (not shown): {ids}.")
    failed_seeds: dict[Combo, set] = {}
    for r in data.failed:
        failed_seeds.setdefault(_combo(data, r), set()).add(r.row.get("seed"))
    for combo in data.combos:
        missing = [s for s in data.expected_seeds(combo) if s not in data.runs(combo)]
        if data.runs(combo) and missing:
            parts = [f"seed {s} " + ("failed" if s in failed_seeds.get(combo, ()) else "not run") for s in missing]
            notes.append(f"Missing for {data.label_text(combo)}: {', '.join(parts)}; the cells hold the "
                         "seeds that finished (their n says how many).")
    if (where := hardware_by_cell(data)) is not None:
        notes.append(f"Trained on more than one machine (their speeds and wall times differ; each run's env.json "
                     f"names its own): {where}.")
    notes += data.notes
    return notes


def _duplicate_text(data: ReportData, run) -> str:
    """A left-out run and the run shown in its place. Run ids are unique in the store, so a left-out run is
    never the spec's own (gather keeps that one): it was made with another recipe, e.g. an earlier
    reading of the network, which a reader must not take for a plain rerun."""
    combo, seed = _combo(data, run), run.row["seed"]
    kept = data.finished[combo][seed].row["run_id"]
    return (f"{run.row['run_id']} ({data.label_text(combo)}, seed {fmt_num(seed)}: made with another recipe than "
            f"the spec now gives; {kept} is shown)")


def _combo(data: ReportData, run) -> Combo:
    return tuple(run.row.get(f"label.{a.axis}", "") for a in data.axes)
