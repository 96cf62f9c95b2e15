"""The SE paper's excitation study over seeds: `results/<profile>/tables/<spec>_excitation.{md,tex,csv}`.

`sebench analyze RUN_DIR` measures one trained run (analysis/excitation_summary.csv: per SE block the mean
and spread of its gates over the test set, the chance-corrected class specificity ω², the share of gates
above 0.95). This table puts the analysed seeds of each of a spec's rows side by side, block by block: mean
± sample std over seeds, so that what one run shows can be told from what the recipe does. Whether
specificity rises with depth is tested in the claims ledger (`...-over-seeds` rows); this table only
describes. Reused runs (`reused_from`) are read from the folder that trained them; a spec whose only
analysed runs are adopted gets no table (the spec that trained them has it).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional

from sebench.report.data import Combo, ReportData, Run, data_label, hardware_label
from sebench.report.stats import mean_std
from sebench.report.tables import Table

SUMMARY = "analysis/excitation_summary.csv"  # written by sebench.analysis.run (`sebench analyze`)

# (summary column, table column, what it is, decimals)
QUANTITIES = [
    ("mean_gate", "mean gate", "the block's gate values averaged over test images and channels", 3),
    ("std_gate", "gate std", "their standard deviation over images and channels (0: an inactive block)", 3),
    ("specificity_adj", "class specificity ω²", "the between-class share of the gates' variance, corrected "
     "for chance (ω²; 0 = the same for every class)", 3),
    ("saturation_share", "share > 0.95", "the share of gate values above 0.95 (1: the block is the identity)", 3),
]
CSV_COLUMNS = ["experiment", "profile", "row", "block", "depth_index", "seeds", "runs"] + [
    f"{k}_{s}" for k, *_ in QUANTITIES for s in ("mean", "std")]


def summary_path(results: Path, run: Run) -> Path:
    """Where the run's analysis lies: its own folder, or for an adopted run the folder that trained it."""
    where = run.row.get("reused_from")
    if not isinstance(where, str) or not where:
        where = f"{run.row['experiment']}/{run.row['run_id']}"
    return Path(results) / "runs" / where / SUMMARY


def read_summary(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return sorted(csv.DictReader(f), key=lambda r: int(r["depth_index"]))


def _label(combo: Combo) -> str:
    return " / ".join(str(v) for v in combo if v is not None) or "(base)"


def excitation_table(data: ReportData) -> Optional[Table]:
    """The table, or None when no finished run that this spec trained (not adopted) has an analysis."""
    analysed: list[tuple[Combo, dict[int, tuple[Run, list[dict]]]]] = []
    for combo in data.combos:
        by_seed = {seed: (run, read_summary(p)) for seed, run in sorted(data.finished.get(combo, {}).items())
                   if (p := summary_path(data.results, run)).is_file()}
        if by_seed:
            analysed.append((combo, by_seed))
    # Only where this spec trained an analysed run itself: an ablation whose one analysed row is the SE
    # run it adopted would repeat the adopting table's numbers.
    if not any(not run.row.get("reused_from") for _, by_seed in analysed for run, _ in by_seed.values()):
        return None
    rows, records = [], []
    for combo, by_seed in analysed:
        label = _label(combo)
        blocks: dict[str, list[dict]] = {}
        for _, summary in by_seed.values():
            for b in summary:
                blocks.setdefault(b["block"], []).append(b)
        for block, values in sorted(blocks.items(), key=lambda kv: int(kv[1][0]["depth_index"])):
            seeds = [s for s, (_, summary) in by_seed.items() if any(b["block"] == block for b in summary)]
            rec = {"experiment": data.spec.name, "profile": data.profile, "row": label, "block": block,
                   "depth_index": int(values[0]["depth_index"]), "seeds": " ".join(map(str, seeds)),
                   "runs": " ".join(by_seed[s][0].row["run_id"] for s in seeds)}
            cells = [label, block, len(seeds)]
            for key, _, _, d in QUANTITIES:
                if not all(v.get(key) for v in values):  # a summary written before the column existed
                    rec[f"{key}_mean"] = rec[f"{key}_std"] = None
                    cells.append("-")
                    continue
                m, sd, n = mean_std([float(v[key]) for v in values])
                rec[f"{key}_mean"], rec[f"{key}_std"] = m, sd
                cells.append(f"{m:.{d}f}" if n == 1 else f"{m:.{d}f} ± {sd:.{d}f}")
            rows.append(cells)
            records.append(rec)
    runs = [run for _, by_seed in analysed for run, _ in by_seed.values()]
    header = [
        ("Source", "003_a73290d79b60d9ae.txt, \"Role of Excitation\" (the SE paper's study of SE-ResNet-50's "
                   "gates on ImageNet; no numbers to set beside these)"),
        ("Profile", f"`{data.profile}` (recipe, cost and each run's error: {data.spec.name}.md)"),
        ("Data", f"{data_label(runs)}, the whole test split of each analysed run"),
        ("Hardware", f"training: {hardware_label(runs)}"),
        ("Runs", "; ".join(f"{_label(combo)}: " + ", ".join(
            f"seed {s} ({run.row['run_id']})" for s, (run, _) in by_seed.items()) for combo, by_seed in analysed)),
        ("Statistics", "each analysed run's value (`sebench analyze RUN_DIR`, its final weights, "
                       "analysis/excitation_summary.csv), mean ± sample std over the seeds: "
                       + "; ".join(f"{col}: {what}" for _, col, what, _ in QUANTITIES)),
    ]
    footnotes = ["Descriptive. Whether class specificity rises with depth (the paper's first observation) is "
                 "tested per run and over each row's seeds in the claims ledger (results/CLAIMS.md, rows "
                 "`.../specificity-vs-depth` and `.../specificity-vs-depth-over-seeds`)."]
    missing = [f"{_label(combo)} seed {s}" for combo, by_seed in analysed
               for s in sorted(set(data.finished.get(combo, {})) - set(by_seed))]
    if missing:
        footnotes.append("Finished but not analysed (no analysis/excitation_summary.csv; `sebench analyze` needs "
                         "the run's checkpoint, which is not committed): " + ", ".join(missing) + ".")
    return Table(name=f"{data.spec.name}_excitation", title=f"Excitation over seeds: {data.spec.title}",
                 profile=data.profile, header=header,
                 columns=["row", "block", "seeds"] + [col for _, col, _, _ in QUANTITIES], rows=rows,
                 footnotes=footnotes, records=records, n_finished=len(runs), csv_columns=list(CSV_COLUMNS))
