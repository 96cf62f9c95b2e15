"""The claims ledger (`sebench claims`): machine matching, one row per comparison across tables, stand-ins in a
section of their own, the same verdicts as the tables, end to end on a synthetic store written by hand; and
the READMEs' quoted conclusions against the committed ledger (results/claims.csv)."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest

from sebench.cli import main
from sebench.report.build import report_spec
from sebench.report.claims import MIXED, SAME, UNKNOWN, machine_match, machine_of
from sebench.spec import expand, load_spec
from sebench.store import collect

ROOT = Path(__file__).resolve().parents[1]

XEON_AMX = "Intel(R) Xeon(R) Processor [amx_bf16]"
EPYC_512 = "AMD EPYC [avx512_bf16]"
EPYC_OLD = "AMD EPYC"  # a record written before the device name carried the ISA


@pytest.mark.parametrize("a, b, expected", [
    (EPYC_512, EPYC_512, SAME),
    (XEON_AMX, XEON_AMX, SAME),
    (EPYC_OLD, EPYC_512, UNKNOWN),  # unknown ISA is unknown, not a match
    (EPYC_OLD, EPYC_OLD, UNKNOWN),
    ("Intel(R) Xeon(R) Processor", XEON_AMX, UNKNOWN),
    (XEON_AMX, EPYC_512, MIXED),  # different CPU models
    ("Intel(R) Xeon(R) Processor", EPYC_OLD, MIXED),  # different models even without the ISA
    ("AMD EPYC [avx2]", EPYC_512, MIXED),  # same name, different ISA: the two EPYCs of this project
    ("", EPYC_512, UNKNOWN),
])
def test_machine_matching(a, b, expected):
    assert machine_match(machine_of("cpu", a), machine_of("cpu", b)) == expected
    assert machine_match(machine_of("cpu", b), machine_of("cpu", a)) == expected


def test_machine_of_reads_model_and_isa():
    assert machine_of("cpu", EPYC_512) == machine_of("cpu", "AMD EPYC  [avx512_bf16] ")
    m = machine_of("cpu", EPYC_512)
    assert (m.model, m.isa) == ("AMD EPYC", "avx512_bf16") and machine_of("cpu", EPYC_OLD).isa is None
    h200 = machine_of("cuda:0", "NVIDIA H200")
    assert machine_match(h200, machine_of("cuda", "NVIDIA H200")) == SAME
    assert machine_match(h200, machine_of("cuda", "NVIDIA A100")) == MIXED
    assert machine_match(h200, m) == MIXED


# ---- a synthetic store --------------------------------------------------------------------------------------

SPEC = """
title: "{title}"
source: {{file: 004_7959756dcf211b7d.txt, table: "3-layer CNN on CIFAR-10 (Table 1)",
         reference: 004_cnn3_cifar10.csv, metrics: {{top1_acc: Accuracy, test_loss: Loss}}}}
base:
  model: {{name: cnn3}}
  data: {{name: cifar10-embedded, augment: none}}
  epochs: 2
  batch_size: 64
seeds: [0, 1]
sweep:
  - axis: method
    ref: row
    values:
      - {{label: Default, ref: Default, baseline: true, set: {{model.se: null}}}}
      - {{label: SE module, ref: "Squeeze and excite module", set: {{model.se: {{variant: se}}}}}}
{extra}
profiles:
  paper: {{seeds: [0, 1, 2, 3]}}
  quick: {{}}
"""
BUMP = '      - {label: Bump module, ref: "Bump module", set: {model.se: {variant: bump}}}'

# profile -> method -> per-seed (top-1 error, test loss, device name)
RUNS = {
    "paper": {
        "Default": [(30.0, 0.90, XEON_AMX), (31.0, 1.00, EPYC_OLD), (32.0, 1.10, XEON_AMX), (31.5, 1.05, XEON_AMX)],
        "SE module": [(29.0, 0.85, EPYC_512), (29.5, 0.97, EPYC_512), (30.0, 1.06, XEON_AMX),
                      (29.8, 1.00, XEON_AMX)],
        "Bump module": [(30.2, 0.91, XEON_AMX), (30.6, 1.01, EPYC_OLD), (32.3, 1.12, XEON_AMX),
                        (31.0, 1.04, XEON_AMX)],
    },
    "quick": {
        "Default": [(40.0, 1.5, EPYC_OLD), (41.0, 1.6, EPYC_OLD)],
        "SE module": [(39.0, 1.4, EPYC_OLD), (40.5, 1.5, EPYC_OLD)],
        "Bump module": [(41.0, 1.6, EPYC_OLD), (42.0, 1.7, EPYC_OLD)],
    },
}


def write_run(results: Path, rc, err: float, loss: float, device_name: str) -> Path:
    """What a finished run leaves that `collect` and the ledger read: config.yaml, summary.json, env.json."""
    import yaml

    d = results / "runs" / rc.experiment / rc.run_id
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"run_id": rc.run_id, **rc.model_dump(mode="json")}))
    (d / "env.json").write_text(json.dumps({"device": "cpu", "device_name": device_name, "run_id": rc.run_id}))
    (d / "summary.json").write_text(json.dumps({
        "status": "finished", "run_id": rc.run_id, "experiment": rc.experiment, "profile": rc.profile,
        "labels": rc.labels, "model": rc.model.name, "se": "none", "dataset": "CIFAR-10 (synthetic test store)",
        "seed": rc.seed,
        "epochs": rc.epochs, "batch_size": rc.batch_size, "final_test_top1_err": err, "final_test_top5_err": err / 4,
        "final_test_loss": loss, "device": "cpu", "device_name": device_name, "threads": 1, "amp": "off",
        "wall_s": 10.0, "torch": "2.14.1", "git_commit": "0123456789ab", "time": "t"}))
    return d


@pytest.fixture
def store(tmp_path):
    """Two specs that share the Default and SE module recipes (one with a Bump row too), in a source-recipe
    profile (4 seeds, three machines) and a stand-in (2 seeds); an excitation analysis in one run folder."""
    specs = tmp_path / "experiments"
    specs.mkdir()
    (specs / "tiny_variants.yaml").write_text(SPEC.format(title="Tiny variants", extra=BUMP))
    (specs / "tiny_pair.yaml").write_text(SPEC.format(title="Tiny pair", extra=""))
    results = tmp_path / "results"
    analysed = None
    for name in ("tiny_variants", "tiny_pair"):
        spec = load_spec(specs / f"{name}.yaml")
        for profile in ("paper", "quick"):
            for rc in expand(spec, profile)[0]:
                err, loss, device = RUNS[profile][rc.labels["method"]][rc.seed]
                d = write_run(results, rc, err, loss, device)
                if (name, profile, rc.labels["method"], rc.seed) == ("tiny_variants", "paper", "SE module", 0):
                    analysed = d
    (analysed / "analysis").mkdir()
    (analysed / "analysis" / "excitation_summary.csv").write_text(
        "block,depth_index,specificity_adj\n" + "".join(f"SE_{i},{i},{0.1 * (i + 1)}\n" for i in range(5)))
    collect(results)
    return specs, results


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_sebench_claims_end_to_end(store, capsys):
    specs, results = store
    assert main(["claims", "--results", str(results), "--folder", str(specs)]) == 0
    out = capsys.readouterr().out
    assert f"ledger: {results / 'CLAIMS.md'}, {results / 'claims.csv'}, {results / 'claims.png'}" in out
    assert (results / "claims.png").stat().st_size > 10_000
    rows = {r["id"]: r for r in read_csv(results / "claims.csv")}

    # the comparison both tables report is one row, naming the other table
    se = [r for r in rows.values() if r["kind"] == "paired" and r["profile"] == "paper"
          and r["claim"].startswith("SE module vs Default")]
    assert len(se) == 2 and {r["metric"] for r in se} == {"top1_acc", "test_loss"}
    acc = rows["paper/tiny_pair/se-module-vs-default/top1_acc"]
    assert "tiny_variants (SE module vs Default)" in acc["also_in"]
    # accuracy diffs +1.0, +1.5, +2.0, +1.7 (error falls): mean 1.55; the source's +0.06 (72.58 - 72.52)
    diffs = [1.0, 1.5, 2.0, 1.7]
    m = sum(diffs) / 4
    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / 3)
    assert (acc["n"], acc["df"], acc["source_delta"]) == ("4", "3", "+0.06")
    assert float(acc["delta"]) == pytest.approx(m) and float(acc["sd"]) == pytest.approx(sd, abs=1e-6)
    assert acc["verdict"] == "reproduced (larger than the source)" and acc["section"] == "claims"
    assert float(acc["mde"]) > 0 and acc["seeds_for_source"].isdigit()

    # machines: seed 0 Xeon vs EPYC (mixed), seed 1 "AMD EPYC" vs "AMD EPYC [avx512_bf16]" (unknown), 2-3 same
    assert (acc["pairs_same"], acc["pairs_mixed"], acc["pairs_unknown"]) == ("2", "1", "1")
    assert (acc["mixed_seeds"], acc["unknown_seeds"], acc["same_n"]) == ("0", "1", "2")
    assert float(acc["same_delta"]) == pytest.approx((2.0 + 1.7) / 2)  # the same-machine-only estimate
    md = (results / "CLAIMS.md").read_text()
    assert "1 mixed (seed 0), 1 unknown (seed 1)" in md

    # the table with three arms gets an omnibus test beside its rows
    omni = rows["paper/tiny_variants/omnibus/top1_acc"]
    assert omni["kind"] == "omnibus" and omni["n"] == "4" and "Friedman" in omni["test"]

    # stand-ins: their own section, after the claims; two seeds give no verdict
    quick = [r for r in rows.values() if r["profile"] == "quick"]
    assert quick and all(r["section"] == "stand-in" for r in quick)
    assert {r["verdict"] for r in quick if r["kind"] == "paired"} == {"no verdict (n < 3)"}
    stand_in_at = md.index("## Stand-ins")
    assert all(md.index(f"`{r['id']}`") > stand_in_at for r in quick)
    assert all(md.index(f"`{r['id']}`") < stand_in_at for r in rows.values() if r["section"] == "claims")

    # a claim that is not a paired delta: specificity rises over 5 blocks, exact p = 2/5! = 1/60
    corr = next(r for r in rows.values() if r["kind"] == "correlation")
    assert float(corr["statistic_value"]) == pytest.approx(1.0) and float(corr["p"]) == pytest.approx(1 / 60,
                                                                                                       abs=1e-6)
    assert corr["verdict"] == "reproduced" and corr["section"] == "claims"


def test_the_seeds_of_one_recipe_test_specificity_vs_depth_together(store):
    """Analyses of three seeds of one recipe (whichever spec trained each) give, besides a row each, one row
    over the seeds (mean ρ, Page's trend test, n = seeds) whose p is the share of all combinations of the seeds' permutations at least as
    extreme; two seeds would give no verdict."""
    import itertools

    import numpy as np

    specs, results = store
    curves = {0: [0.1, 0.2, 0.3, 0.4, 0.5], 1: [0.2, 0.1, 0.3, 0.5, 0.4], 2: [0.3, 0.1, 0.2, 0.5, 0.4]}
    for seed, values in curves.items():
        # seed 2 analysed where tiny_pair trained the same recipe: the seeds of a recipe pool across experiments
        experiment = "tiny_pair" if seed == 2 else "tiny_variants"
        folder = next(d for d in (results / "runs" / experiment).iterdir()
                      if json.loads((d / "summary.json").read_text())["labels"] == {"method": "SE module"}
                      and json.loads((d / "summary.json").read_text())["seed"] == seed
                      and json.loads((d / "summary.json").read_text())["profile"] == "paper")
        (folder / "analysis").mkdir(exist_ok=True)
        (folder / "analysis" / "excitation_summary.csv").write_text(
            "block,depth_index,specificity_adj\n" + "".join(f"SE_{i},{i},{v}\n" for i, v in enumerate(values)))
    assert main(["claims", "--results", str(results), "--folder", str(specs), "--no-plot"]) == 0
    rows = {r["id"]: r for r in read_csv(results / "claims.csv")}
    pooled = rows["paper/tiny_variants/se-module/specificity-vs-depth-over-seeds"]
    single = [r for r in rows.values() if r["id"].endswith("/specificity-vs-depth") and r["profile"] == "paper"]
    assert len(single) == 3 and pooled["n"] == "3" and pooled["seeds"] == "0 1 2"
    assert [r.split("/")[0] for r in pooled["runs"].split()] == ["tiny_variants", "tiny_variants", "tiny_pair"]
    stats = [np.array([float(np.dot(np.array(perm) - 2, np.arange(5) - 2)) for perm in itertools.permutations(range(5))])
             for _ in curves]
    observed = 10 + 8 + 6  # rank products: seed 0 in order; seeds 1 and 2 with swaps
    every = stats[0][:, None, None] + stats[1][None, :, None] + stats[2][None, None, :]
    p = float(np.mean(np.abs(every) >= observed))
    assert float(pooled["p"]) == pytest.approx(p, rel=1e-3) and float(pooled["p_holm"]) == pytest.approx(p, rel=1e-3)
    assert pooled["verdict"] == ("reproduced" if p < 0.05 else "inconclusive")
    assert float(pooled["statistic_value"]) == pytest.approx((1.0 + 0.8 + 0.6) / 3)
    assert "in 3 seeds together" in pooled["claim"] and "Page's trend test" in pooled["test"]


def test_tables_state_the_ledgers_verdicts(store):
    """One definition: the table's verdict column and the ledger's row say the same for a comparison."""
    specs, results = store
    assert main(["claims", "--results", str(results), "--folder", str(specs), "--no-plot"]) == 0
    ledger = {r["id"]: r for r in read_csv(results / "claims.csv")}
    for name, profile in (("tiny_variants", "paper"), ("tiny_pair", "paper"), ("tiny_variants", "quick")):
        rep = report_spec(load_spec(specs / f"{name}.yaml"), profile, results, plots=False)
        for rec in read_csv(rep.tables[2]):
            if not rec["verdict"]:
                continue
            cid = f"{profile}/{name}/{rec['row'].lower().replace(' ', '-')}-vs-default/{rec['metric']}"
            if cid in ledger:
                assert rec["verdict"] == ledger[cid]["verdict"], cid
            else:  # reported by the other table too: one ledger row, which names this one
                twin = next(r for r in ledger.values() if r["profile"] == profile and r["metric"] == rec["metric"]
                            and r["claim"].startswith(rec["row"] + " vs"))
                assert name in twin["also_in"]


def test_no_runs_is_one_clear_message(tmp_path, capsys):
    assert main(["claims", "--results", str(tmp_path / "results")]) == 2
    err = capsys.readouterr().err
    assert "no consolidated runs" in err and "sebench collect" in err and len(err.strip().splitlines()) == 1


# ---- the READMEs quote the committed ledger -----------------------------------------------------------------

LEDGER_CSV = ROOT / "results" / "claims.csv"
READMES = [ROOT / "README.md", ROOT / "results" / "README.md"]
TAG = re.compile(r"ledger `([^`]+)`")
# a delta with its interval, e.g. "-0.27 [-0.59, +0.06]" (not a benchmark's "+2.2% [-3.7, +6.2]")
INTERVAL = re.compile(r"(?<![\d.%])([+-]?\d+\.\d+) \[([+-]?\d+\.\d+), ([+-]?\d+\.\d+)\]")


def _flat(path: Path) -> str:
    return re.sub(r"\s+", " ", path.read_text())


def _ledger() -> dict[str, dict]:
    return {r["id"]: r for r in read_csv(LEDGER_CSV)}


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_quoted_claim_is_a_ledger_row(readme):
    """Each tagged quote (`... (n=5, inconclusive (MDE 0.44); ledger `ID`)`) is the ledger row's own quote:
    its numbers, n and verdict."""
    ledger, text = _ledger(), _flat(readme)
    tags = TAG.findall(text)
    assert tags, f"{readme.name} quotes no ledger row"
    for cid in tags:
        assert cid in ledger, f"{readme.name}: no ledger row {cid}"
        assert re.sub(r"\s+", " ", ledger[cid]["quote"]) in text, f"{readme.name}: the quote of {cid} differs " \
                                                                  f"from the ledger's: {ledger[cid]['quote']}"


@pytest.mark.parametrize("readme", READMES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_quoted_interval_is_in_the_ledger(readme):
    """A delta with an interval anywhere in the READMEs is a ledger row's pooled or same-machine estimate,
    at the precision it is quoted with."""
    rows = list(_ledger().values())

    def matches(mean: str, low: str, high: str) -> bool:
        """Either orientation: a table that reports a comparison the other way round quotes -Δ [-high, -low]."""
        dec = len(mean.split(".")[1])
        quoted = [float(mean), float(low), float(high)]
        for values in (quoted, [-quoted[0], -quoted[2], -quoted[1]]):
            for r in rows:
                for keys in (("delta", "ci_low", "ci_high"), ("same_delta", "same_low", "same_high")):
                    # within half a unit of the quoted last digit (and the CSV's own 6-decimal rounding: a
                    # -0.514999.. quoted as -0.51 is -0.515 in the CSV)
                    if r.get(keys[1]) and all(abs(float(r[k]) - v) <= 0.5 * 10 ** -dec + 1e-6
                                              for k, v in zip(keys, values)):
                        return True
        return False

    found = INTERVAL.findall(_flat(readme))
    assert found
    missing = [f"{m} [{lo}, {hi}]" for m, lo, hi in found if not matches(m, lo, hi)]
    assert not missing, f"{readme.name} quotes intervals that no ledger row has: {missing}"


def test_the_readmes_no_longer_state_what_the_ledger_does_not_support():
    results_readme, readme = _flat(READMES[1]), _flat(READMES[0])
    assert "every table is on one machine" not in results_readme
    assert "No `paper`-profile result is committed" not in results_readme
    assert "within about half a point of Default" not in results_readme
    assert "The paper's claim 1 holds" not in results_readme  # its test says p 0.12-0.18
    # the machine counts quoted for the flagship are the ledger's
    md = _flat(ROOT / "results" / "CLAIMS.md")
    for quoted in re.findall(r"(\d+ run pairs: \d+ same machine, \d+ mixed, \d+ unknown)", results_readme):
        assert quoted in md
