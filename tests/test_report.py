"""`sebench report`: tables, statistics and plots from a synthetic store written by hand.

The store holds a tiny spec laid out like the SE paper's CIFAR-10 table (rows: model, columns: original /
SENet), with errors chosen so that every number in the table can be checked by hand, and a run that failed.
The Markdown table is compared with tests/golden/report_tiny_cifar.md; after an intended change to the
layout, regenerate it with

    SEBENCH_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_report.py

and read the diff before committing it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from pathlib import Path

import pytest
import yaml

from sebench.cli import main
from sebench.errors import UserError
from sebench.report.build import report_all, report_spec
from sebench.report.stats import INTERVAL_METHOD
from sebench.spec import expand, load_spec
from sebench.store import RunDir, collect

GOLDEN = Path(__file__).parent / "golden"
T_975_DF2 = 4.302652729911275  # Student t quantile, 0.975, 2 degrees of freedom
T_975_DF1 = 12.706204736174707

TINY_CIFAR = """
title: "Tiny: SE vs original on CIFAR-10 (synthetic store)"
source:
  file: 003_a73290d79b60d9ae.txt
  table: "TABLE 4 Classification error (%) on CIFAR-10"
  reference: 003_cifar10.csv
  metrics: {top1_err: "{column}"}
notes:
  - "Numbers written by the test, not trained."
base:
  model: {name: resnet20}
  data: {name: cifar10-embedded}
  epochs: 3
  batch_size: 64
  benchmark: {batch_size: 32}
seeds: [0, 1, 2]
sweep:
  - axis: model
    ref: row
    values:
      - {label: ResNet-110, ref: "ResNet-110 [14]", set: {model.name: resnet20}}
      - {label: ResNet-164, ref: "ResNet-164 [14]", set: {model.name: resnet32}}
      - {label: Shake-Shake, ref: "Shake-Shake 26 2x96d [68] + Cutout [69]", pending: "not in the zoo yet"}
  - axis: se
    ref: column
    values:
      - {label: original, ref: original, baseline: true, set: {model.se: null}}
      - {label: SENet, ref: SENet, set: {model.se: {variant: se, reduction: 16}}}
profiles:
  quick:
    description: "CPU stand-in with synthetic numbers"
"""

# (model, se) -> {seed: final top-1 error}; None = the run failed; a missing seed was never run.
CIFAR_ERRORS = {
    ("ResNet-110", "original"): {0: 10.0, 1: 12.0, 2: 11.0},
    ("ResNet-110", "SENet"): {0: 9.0, 1: 10.0, 2: 9.5},
    ("ResNet-164", "original"): {0: 8.0, 1: 9.0},
    ("ResNet-164", "SENet"): {0: 8.6, 1: 9.2, 2: None},
}

TINY_CNN3 = """
title: "Tiny: SE in a 3-layer CNN (accuracy table, synthetic store)"
source: {file: 004_7959756dcf211b7d.txt, table: "3-layer CNN on CIFAR-10 (Table 1)",
         reference: 004_cnn3_cifar10.csv, metrics: {top1_acc: Accuracy, test_loss: Loss}}
base:
  model: {name: cnn3}
  data: {name: cifar10-embedded, augment: none}
  epochs: 2
  batch_size: 64
seeds: [0, 1, 2]
sweep:
  - axis: method
    ref: row
    values:
      - {label: Default, ref: Default, baseline: true, set: {model.se: null}}
      - {label: SE module, ref: "Squeeze and excite module", set: {model.se: {variant: se}}}
profiles:
  quick: {}
"""

CNN3_ERRORS = {("Default",): {0: 30.0, 1: 31.0, 2: 32.0}, ("SE module",): {0: 29.0, 1: 29.5, 2: 30.0}}
CNN3_LOSSES = {("Default",): {0: 0.90, 1: 1.00, 2: 1.10}, ("SE module",): {0: 0.85, 1: 0.97, 2: 1.06}}


# ---- a synthetic store ------------------------------------------------------------------------------------

def write_run(root: Path, rc, final_err: float | None, *, loss: float = 1.0, wall_s: float = 10.0,
              params: int = 270_000, flops: int = 40_000_000, train_img_s: float = 100.0,
              infer_img_s: float = 300.0, device_name: str = "Test CPU") -> Path:
    """What `fit` leaves in a run directory, written by hand: config.yaml, env.json, metrics.jsonl, summary."""
    d = root / "runs" / rc.experiment / rc.run_id
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"run_id": rc.run_id, **rc.model_dump(mode="json")},
                                                  sort_keys=False))
    (d / "env.json").write_text(json.dumps({"versions": {"torch": "2.14.1"}, "device": "cpu",
                                            "device_name": "Test CPU", "threads": 2, "run_id": rc.run_id}))
    fields = {"run_id": rc.run_id, "experiment": rc.experiment, "profile": rc.profile, "labels": rc.labels,
              "model": rc.model.name, "se": rc.model.se.short() if rc.model.se else "none", "se_stages": None,
              "dataset": "CIFAR-10 (synthetic test store)", "seed": rc.seed, "epochs": rc.epochs,
              "batch_size": rc.batch_size}
    if final_err is None:
        (d / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_top1_err": 80.0}) + "\n")
        (d / "summary.json").write_text(json.dumps({"status": "failed", **fields, "epoch": 2,
                                                    "reason": "non-finite test loss (nan)", "time": "t"}))
        return d
    lines = []
    for epoch in range(1, rc.epochs + 1):  # error falls towards its final value
        err = final_err + 20.0 * (rc.epochs - epoch) / rc.epochs
        lines.append(json.dumps({"epoch": epoch, "train_loss": 1.0, "test_loss": loss, "test_top1_err": err,
                                 "test_top5_err": err / 4, "lr": 0.1, "train_img_s": train_img_s,
                                 "epoch_s": wall_s / rc.epochs, "time": 1.0e9 + epoch}))
    (d / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    summary = {"status": "finished", **fields, "final_test_top1_err": final_err,
               "final_test_top5_err": final_err / 4, "final_test_loss": loss, "final_train_loss": 1.0,
               "params": params, "flops": flops, "input_size": [3, 32, 32], "train_img_s": train_img_s,
               "wall_s": wall_s, "infer_img_s": infer_img_s, "infer_batch_size": rc.benchmark.batch_size,
               "device": "cpu", "device_name": device_name, "threads": 2, "amp": "off", "channels_last": False,
               "torch": "2.14.1", "timm": "1.0.31", "git_commit": "0123456789abcdef0123", "time": "t"}
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def make_store(tmp_path: Path, spec_text: str, name: str, errors: dict, losses: dict | None = None,
               profile: str = "quick", **run_kwargs):
    spec_path = tmp_path / f"{name}.yaml"
    spec_path.write_text(spec_text)
    spec = load_spec(spec_path)
    results = tmp_path / "results"
    runs, _ = expand(spec, profile)
    axes = [a.axis for a in spec.sweep]
    for i, rc in enumerate(runs):
        key = tuple(rc.labels[a] for a in axes)
        by_seed = errors.get(key, {})
        if rc.seed not in by_seed:
            continue  # never run
        loss = (losses or {}).get(key, {}).get(rc.seed, 1.0)
        extra = run_kwargs.get("per_run", lambda rc: {})(rc)
        write_run(results, rc, by_seed[rc.seed], loss=loss, wall_s=10.0 + i, **extra)
    collect(results, profile)
    return spec, spec_path, results


@pytest.fixture
def cifar_store(tmp_path):
    def per_run(rc):  # SE: slower and slightly bigger, as it is
        se = rc.model.se is not None
        return {"train_img_s": 80.0 + rc.seed if se else 100.0 + rc.seed, "infer_img_s": 250.0 if se else 300.0,
                "params": 272_000 if se else 270_000}
    return make_store(tmp_path, TINY_CIFAR, "tiny_cifar", CIFAR_ERRORS, per_run=per_run)


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def cell(rows: list[dict], row: str, column: str, metric: str = "top1_err") -> dict:
    return next(r for r in rows if r["row"] == row and r["column"] == column and r["metric"] == metric)


# ---- statistics through the report ------------------------------------------------------------------------

def test_cells_and_paired_deltas_match_hand_computation(cifar_store):
    spec, _, results = cifar_store
    rep = report_spec(spec, "quick", results, plots=False)
    rows = read_csv(rep.tables[2])

    base = cell(rows, "ResNet-110", "original")
    assert (float(base["mean"]), float(base["std"]), base["n"]) == (11.0, 1.0, "3")
    assert float(base["source"]) == 6.37
    se = cell(rows, "ResNet-110", "SENet")
    assert (float(se["mean"]), float(se["std"])) == (9.5, 0.5)
    # per-seed differences -1, -2, -1.5: mean -1.5, sd 0.5, half-width t(0.975, 2) * 0.5 / sqrt(3)
    half = T_975_DF2 * 0.5 / math.sqrt(3)
    assert float(se["delta"]) == pytest.approx(-1.5)
    assert float(se["delta_low"]) == pytest.approx(-1.5 - half, abs=1e-9)
    assert float(se["delta_high"]) == pytest.approx(-1.5 + half, abs=1e-9)
    assert float(se["source_delta"]) == pytest.approx(5.21 - 6.37)
    assert se["verdict"] == "reproduced" and se["interval"] == INTERVAL_METHOD
    assert se["baseline"] == "model=ResNet-110, se=original"

    # ResNet-164: original has seeds 0, 1; SENet 0, 1 (seed 2 failed): paired on seeds 0 and 1 only.
    se164 = cell(rows, "ResNet-164", "SENet")
    assert se164["n"] == "2" and se164["n_expected"] == "3" and se164["status"] == "partial"
    diffs = [8.6 - 8.0, 9.2 - 9.0]
    m = sum(diffs) / 2
    sd = math.sqrt(sum((d - m) ** 2 for d in diffs))
    assert float(se164["delta"]) == pytest.approx(m)
    assert float(se164["delta_high"]) - float(se164["delta"]) == pytest.approx(T_975_DF1 * sd / math.sqrt(2))
    assert se164["delta_n"] == "2" and se164["verdict"] == "no verdict (n < 3)"  # two pairs test nothing
    assert float(se164["source_delta"]) == pytest.approx(4.39 - 5.46)

    shake = cell(rows, "Shake-Shake", "SENet")
    assert shake["status"] == "pending" and shake["mean"] == ""
    assert float(shake["source"]) == 2.12  # the source's number is shown beside a pending row


def test_markdown_matches_golden(cifar_store):
    spec, _, results = cifar_store
    rep = report_spec(spec, "quick", results, plots=False)
    # Run ids hash the whole RunConfig: a new config field would change them without changing the layout.
    text = re.sub(r"(?i)\b(run )[0-9a-f]{12}\b", r"\1<run_id>", rep.tables[0].read_text())
    golden = GOLDEN / "report_tiny_cifar.md"
    if os.environ.get("SEBENCH_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text(), "layout changed: see this module's docstring to regenerate the golden file"


def test_markdown_says_what_a_reader_needs(cifar_store):
    spec, _, results = cifar_store
    md = report_spec(spec, "quick", results, plots=False).tables[0].read_text()
    assert "| ResNet-110 | 11.00 ± 1.00 (n=3) | 6.37 | 9.50 ± 0.50 (n=3) | 5.21 | -1.50 [-2.74, -0.26] (n=3) " \
           "| -1.16 | reproduced |" in md
    assert "8.50 ± 0.71 (n=2 of 3)" in md  # ResNet-164 original: two of three seeds ran
    assert "| Shake-Shake | pending |" in md and "Pending: Shake-Shake: not in the zoo yet." in md
    assert "NOT comparable with the paper's" in md  # quick profile caveat
    assert "Failed run" in md and "non-finite test loss (nan)" in md
    assert "Test CPU (cpu, 2 threads)" in md and "CIFAR-10 (synthetic test store)" in md
    assert "over 10 finished runs" in md and INTERVAL_METHOD in md
    assert "Numbers written by the test" in md  # spec notes become footnotes
    tex = report_spec(spec, "quick", results, plots=False).tables[1].read_text()
    assert "\\begin{tabular}" in tex and "$\\pm$" in tex and "\\%" in tex


def test_accuracy_table_converts_error_and_deltas_along_rows(tmp_path):
    spec, _, results = make_store(tmp_path, TINY_CNN3, "tiny_cnn3", CNN3_ERRORS, CNN3_LOSSES)
    rep = report_spec(spec, "quick", results, plots=False)
    rows = read_csv(rep.tables[2])
    acc = cell(rows, "SE module", "", "top1_acc")
    assert float(acc["mean"]) == pytest.approx(100 - 29.5) and acc["unit"] == "% accuracy"
    assert float(acc["source"]) == 72.58
    # accuracy diffs +1, +1.5, +2 -> mean 1.5, sd 0.5; source +0.06 (72.58 - 72.52)
    assert float(acc["delta"]) == pytest.approx(1.5)
    assert float(acc["delta_low"]) == pytest.approx(1.5 - T_975_DF2 * 0.5 / math.sqrt(3))
    # Holm over the table's two comparisons (p 0.035 and 0.020 against 0; 0.038 and 0.023 against the
    # source's deltas): both reject, so the source's direction holds and its size is exceeded
    assert float(acc["source_delta"]) == pytest.approx(0.06)
    assert acc["verdict"] == "reproduced (larger than the source)"
    loss = cell(rows, "SE module", "", "test_loss")
    assert float(loss["delta"]) == pytest.approx(-0.04) and loss["verdict"] == "reproduced (larger than the source)"
    assert float(loss["source_delta"]) == pytest.approx(0.8068 - 0.8091)
    md = rep.tables[0].read_text()
    assert "our accuracy = 100 − our error" in md
    assert "| Default (baseline) | 69.00 ± 1.00 (n=3) | 72.52 |" in md


def test_no_claim_and_not_run_are_never_numbers(tmp_path):
    errors = {("Default",): {0: 30.0}}  # the SE row was never run
    spec, _, results = make_store(tmp_path, TINY_CNN3, "tiny_cnn3", errors)
    md = report_spec(spec, "quick", results, plots=False).tables[0].read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("| SE module"))
    assert line.startswith("| SE module | not run | 72.58 | not run | 0.8068 | not run | +0.06 | not tested |")


def test_missing_runs_csv_names_collect(tmp_path):
    spec_path = tmp_path / "tiny_cifar.yaml"
    spec_path.write_text(TINY_CIFAR)
    with pytest.raises(UserError, match="sebench collect"):
        report_spec(load_spec(spec_path), "quick", tmp_path / "results")


def test_cli_missing_runs_csv_is_one_line_exit_2(tmp_path, capsys):
    spec_path = tmp_path / "tiny_cifar.yaml"
    spec_path.write_text(TINY_CIFAR)
    assert main(["report", str(spec_path), "--profile", "quick", "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "sebench collect" in err and "Traceback" not in err and err.count("\n") == 1


# ---- plots and the command ----------------------------------------------------------------------------------

def _assert_images(paths: list[Path], stems: set[str]):
    assert {p.stem for p in paths} == stems
    for p in paths:
        assert p.stat().st_size > 5000, p
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else b"<?xml" in head


def test_cli_report_writes_tables_plots_and_prints_markdown(cifar_store, capsys):
    _, spec_path, results = cifar_store
    assert main(["report", str(spec_path), "--profile", "quick", "--results", str(results)]) == 0
    out = capsys.readouterr().out
    assert "| model | original top-1 err. (%) | source |" in out
    assert str(results / "quick" / "tables" / "tiny_cifar.md") in out
    plots = sorted((results / "quick" / "plots").iterdir())
    _assert_images(plots, {"tiny_cifar_throughput", "tiny_cifar_curves", "tiny_cifar_effects"})
    assert len(plots) == 6  # png + svg each


def test_curves_zoom_on_the_last_quarter_of_the_epochs():
    """The learning curves' second panel: the last 25% of the epochs (at least two), none under 4 epochs."""
    from sebench.report.plots import zoom_window

    assert [zoom_window(n) for n in (3, 4, 8, 15, 40, 90)] == [None, (3, 4), (7, 8), (12, 15), (31, 40), (68, 90)]


def test_effect_curves_pair_each_epoch_by_seed(tmp_path):
    """Δ per epoch = mean over seeds of (variant − baseline) at that epoch, over the seeds with both arms there."""
    from sebench.report.data import gather
    from sebench.report.plots import effect_curves

    spec, _, results = make_store(tmp_path, TINY_PAIRS, "tiny_pairs", SHORT, profile="fp32")
    data = gather(spec, "fp32", results)
    se1 = RunDir.of(results, "tiny_pairs", data.runs(("SENet",))[1].row["run_id"]).metrics
    se1.write_text("\n".join(json.dumps({"epoch": e, "test_top1_err": v}) for e, v in ((1, 30.0), (2, 20.0))) + "\n")
    (curve,) = effect_curves(data)  # seed 1's SE run now has epochs 1-2 only
    assert curve.label == "SENet − original" and curve.epochs == [1, 2, 3] and curve.n == [3, 3, 2]
    # write_run's curves: final + 20 (3 - epoch) / 3, so the other seeds' Δ is their final Δ at every epoch
    assert curve.means[0] == pytest.approx(((9.0 - 10.0) + (30.0 - (10.5 + 40 / 3)) + (9.2 - 9.0)) / 3)
    assert curve.means[2] == pytest.approx(((9.0 - 10.0) + (9.2 - 9.0)) / 2)  # epoch 3: seeds 0 and 2
    assert curve.low[2] is not None and curve.low[2] < curve.means[2] < curve.high[2]


def test_effect_curves_of_an_accuracy_table_are_in_accuracy(tmp_path):
    from sebench.report.data import gather
    from sebench.report.plots import effect_curves

    spec, _, results = make_store(tmp_path, TINY_CNN3, "tiny_cnn3", CNN3_ERRORS, CNN3_LOSSES)
    (curve,) = effect_curves(gather(spec, "quick", results))
    assert curve.metric == "top1_acc" and curve.label == "SE module − Default"
    assert curve.means == pytest.approx([1.5, 1.5])  # accuracy +1, +1.5, +2 at every epoch (write_run's curves)


def test_reduction_plot_for_the_reduction_ablation(tmp_path):
    """The real ablation spec, smoke profile: error and params against r, the baseline as a band."""
    spec = load_spec(Path(__file__).parents[1] / "experiments" / "ablation_reduction.yaml")
    results = tmp_path / "results"
    runs, _ = expand(spec, "smoke")
    for rc in runs:
        r = rc.model.se.reduction if rc.model.se else None
        write_run(results, rc, 40.0 - (r or 0) / 8, params=270_000 + (0 if r is None else 40_000 // r))
    collect(results, "smoke")
    rep = report_spec(spec, "smoke", results)
    _assert_images(rep.plots, {"ablation_reduction_throughput", "ablation_reduction_curves",
                               "ablation_reduction_effects", "ablation_reduction_reduction"})


def test_report_all_builds_an_index(cifar_store):
    spec, spec_path, results = cifar_store
    folder = spec_path.parent
    text = spec_path.read_text()
    (folder / "not_run.yaml").write_text(text.replace('title: "', 'title: "Never run '))
    (folder / "paper_only.yaml").write_text(text.replace('title: "', 'title: "Paper only ').replace("  quick:", "  big:"))
    all_pending = text.replace('title: "', 'title: "All pending ').replace(
        'set: {model.name: resnet20}}', 'pending: "not in the zoo yet"}').replace(
        'set: {model.name: resnet32}}', 'pending: "needs a GPU"}')
    (folder / "all_pending.yaml").write_text(all_pending)
    reports = report_all("quick", results, folder, plots=False, log=lambda s: None)
    assert [r.spec.name for r in reports] == ["tiny_cifar"]
    index = (results / "quick" / "tables" / "README.md").read_text()
    assert "[tiny_cifar](tiny_cifar.md)" in index and "| 10 / 12 | 1 |" in index  # finished / planned | failed
    absent = index.split("## Specs without a table in this profile")[1]
    assert "| not_run | Never run " in absent and "| no finished run yet (12 planned) |" in absent
    assert "| paper_only | Paper only " in absent and "has no `quick` profile" in absent
    assert "| all_pending | All pending " in absent
    assert "| every row pending: not in the zoo yet; needs a GPU |" in absent  # each reason once, in order
    assert "tiny_cifar" not in absent


def test_report_all_without_plots_keeps_the_index_links_to_earlier_plots(cifar_store):
    spec, spec_path, results = cifar_store
    plots = results / "quick" / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    for name in ("tiny_cifar_curves.png", "tiny_cifar_curves.svg", "tiny_cifar_extra_curves.png"):
        (plots / name).write_bytes(b"png")  # the last one belongs to no plot kind of this spec
    reports = report_all("quick", results, spec_path.parent, plots=False, log=lambda s: None)
    assert reports[0].plots == []  # nothing written, so nothing for the CLI to list or W&B to mirror
    row = next(line for line in (results / "quick" / "tables" / "README.md").read_text().splitlines()
               if line.startswith("| [tiny_cifar]"))
    assert row.endswith("| [curves](../plots/tiny_cifar_curves.png) |")


def test_throughput_plot_keeps_one_machine(tmp_path):
    """Speeds from two machines are not comparable: the plot keeps the machine with most runs and says
    which runs it left out; the tables still use every run."""
    from sebench.report.data import gather
    from sebench.report.plots import throughput_hardware

    def per_run(rc):
        fast = rc.model.se is None and rc.seed == 0
        return {"device_name": "Fast CPU" if fast else "Test CPU", "train_img_s": 300.0 if fast else 100.0}

    spec, _, results = make_store(tmp_path, TINY_CIFAR, "tiny_cifar", CIFAR_ERRORS, per_run=per_run)
    data = gather(spec, "quick", results)
    assert throughput_hardware(data) == ("Test CPU", ["Fast CPU"])
    rep = report_spec(spec, "quick", results)
    svg = next(p for p in rep.plots if p.name == "tiny_cifar_throughput.svg").read_text()
    assert "left out: the runs on Fast CPU" in svg.replace("\n", " ")
    md = rep.markdown_path.read_text()
    assert "Fast CPU" in md.split("- **Recipe:**")[0]  # the table's hardware line names both
    note = next(line for line in md.splitlines() if "Trained on more than one machine" in line)
    assert "Fast CPU (cpu, 2 threads): ResNet-110 / original (seed 0), ResNet-164 / original (seed 0);" in note
    assert "ResNet-110 / SENet (seeds 0, 1, 2)" in note  # who trained where, each cell once
    assert note.count("Fast CPU") == 1 and "Test CPU (cpu, 2 threads): " in note
    (tmp_path / "one").mkdir()
    one = make_store(tmp_path / "one", TINY_CIFAR, "tiny_cifar", CIFAR_ERRORS)
    assert "more than one machine" not in report_spec(one[0], "quick", one[2]).markdown_path.read_text()


def test_point_labels_stay_inside_their_panel_do_not_overlap_and_drop_glosses_the_legend_holds():
    """A long label beside the right-most point used to run past the panel's edge (se_imagenet's stand-ins),
    and labels of nearby points overlapped."""
    from types import SimpleNamespace

    from sebench.report.plots import _annotate, _figure, _point_labels

    data = SimpleNamespace(short_label=lambda combo: " / ".join(combo))
    combos = [("ResNet-20 (quick stand-in for ResNet-50)", "SENet"),
              ("ResNet-56 (quick stand-in for ResNet-101)", "SENet")]
    assert _point_labels(data, combos) == ["ResNet-20 / SENet", "ResNet-56 / SENet"]
    twins = [("ResNet-20 (a)", "SENet"), ("ResNet-20 (b)", "SENet")]  # the short forms would collide: keep full
    assert _point_labels(data, twins) == ["ResNet-20 (a) / SENet", "ResNet-20 (b) / SENet"]

    fig = _figure(5, 3)
    ax = fig.subplots()
    points = [(10.0, 40.0), (50.0, 45.0), (95.0, 50.0)]
    ax.plot(*zip(*points), "o")
    _annotate(ax, [("ResNet-56 / re-implementation", xy) for xy in points])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    panel = ax.get_window_extent(renderer)
    for text in ax.texts:
        box = text.get_window_extent(renderer)
        assert panel.x0 - 1 <= box.x0 and box.x1 <= panel.x1 + 1, text.get_text()
    assert [t.get_horizontalalignment() for t in ax.texts] == ["left", "left", "right"]

    # points close together (variants_cnn3_cifar10): their labels move to free lines instead of overlapping
    fig = _figure(5, 3)
    ax = fig.subplots()
    crowded = [(50.0, 43.0), (51.0, 43.05), (52.0, 42.95), (50.5, 43.1)]
    ax.plot(*zip(*crowded), "o")
    ax.set_ylim(30, 55)
    _annotate(ax, [(f"Slow squeeze and slow excite {i}", xy) for i, xy in enumerate(crowded)])
    fig.canvas.draw()
    boxes = [t.get_window_extent(fig.canvas.get_renderer()) for t in ax.texts]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


# ---- `sebench speed`: the configurations re-measured side by side -------------------------------------------

def _speed_args(results: Path, *extra: str) -> list[str]:
    return ["speed", "tiny_cifar", "--profile", "quick", "--results", str(results), "--device", "cpu",
            "--threads", "1", "--repeats", "2", "--iters", "1", *extra]


def test_speed_remeasures_each_configuration_once_and_plots_use_it(cifar_store, capsys, one_thread):
    spec, _, results = cifar_store
    assert main(_speed_args(results)) == 0
    out = capsys.readouterr().out
    assert "re-measuring 4 configuration(s) of 10 run(s)" in out and str(results / "runs") in out
    records = {}
    for summary in (results / "runs" / "tiny_cifar").glob("*/summary.json"):
        s = json.loads(summary.read_text())
        speed = summary.parent / "speed.json"
        assert speed.exists() == (s["status"] == "finished")
        if speed.exists():
            records.setdefault((s["labels"]["model"], s["labels"]["se"]), []).append(json.loads(speed.read_text()))
    assert len(records) == 4
    for recs in records.values():  # seeds of one configuration share one measurement
        assert all(r == recs[0] for r in recs)
        r = recs[0]
        assert r["train_batch_size"] == 64 and r["infer_batch_size"] == 32 and r["repeats"] == 2
        assert r["train_img_s_min"] <= r["train_img_s"] <= r["train_img_s_max"] and r["train_img_s"] > 0
        assert r["infer_img_s"] > 0 and r["threads"] == 1 and r["configurations"] == 4
    # measured already, on this machine with these threads: skipped unless forced
    assert main(_speed_args(results)) == 0
    assert "already re-measured" in capsys.readouterr().out

    collect(results, "quick")
    rows = [r for r in read_csv(results / "quick" / "runs.csv") if r["status"] == "finished"]
    assert all(float(r["speed_train_img_s"]) > 0 and float(r["speed_threads"]) == 1 for r in rows)
    rep = report_spec(spec, "quick", results)
    svg = next(p for p in rep.plots if p.name == "tiny_cifar_throughput.svg").read_text().replace("\n", " ")
    assert "re-measured in one sitting" in svg and "medians of 2 repeats" in svg

    # one configuration without a re-measurement: the plot falls back to the runs' own speeds, and says so
    for d in (results / "runs" / "tiny_cifar").iterdir():
        if json.loads((d / "summary.json").read_text())["labels"] == {"model": "ResNet-164", "se": "SENet"}:
            (d / "speed.json").unlink(missing_ok=True)
    collect(results, "quick")
    rep = report_spec(spec, "quick", results)
    svg = next(p for p in rep.plots if p.name == "tiny_cifar_throughput.svg").read_text().replace("\n", " ")
    assert "measured while it trained" in svg and "re-measured in one sitting" not in svg


@pytest.mark.parametrize("argv, message", [
    (["speed", "no_such_spec", "--profile", "quick"], "no finished runs of no_such_spec"),
    (["speed", "tiny_cifar", "--profile", "quick", "--repeats", "0"], "--repeats must be at least 1"),
])
def test_speed_mistakes_are_one_line(cifar_store, capsys, argv, message):
    _, _, results = cifar_store
    assert main([*argv, "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and err.count("\n") == 1
    assert not list((results / "runs").glob("*/*/speed.json"))


def test_reused_runs_are_named_and_not_counted_as_compute(tmp_path):
    spec, _, results = make_store(tmp_path, TINY_CIFAR, "tiny_cifar", CIFAR_ERRORS)
    before = read_csv(results / "quick" / "runs.csv")
    donor = next(r for r in before if r["status"] == "finished")
    path = results / "runs" / "tiny_cifar" / donor["run_id"] / "summary.json"
    summary = json.loads(path.read_text())
    path.write_text(json.dumps({**summary, "reused_from": "other_table/0123456789ab"}))
    collect(results, "quick")
    text = report_spec(spec, "quick", results).markdown_path.read_text()
    finished = sum(r["status"] == "finished" for r in before)
    assert f"over {finished - 1} finished runs" in text
    assert "1 more run(s) reused from identical runs of other_table" in text


def test_analysed_seeds_get_an_excitation_table_block_by_block(tmp_path, capsys):
    """Where runs of a row carry `sebench analyze`'s summary, `report` writes <spec>_excitation (md, tex, csv):
    per row and SE block, mean ± sample std over the analysed seeds; an adopted run is read from the folder
    that trained it; finished seeds without an analysis are named; the index links the table. No analysis,
    no table."""
    spec, spec_path, results = make_store(tmp_path, TINY_CIFAR, "tiny_cifar", CIFAR_ERRORS)
    rows = read_csv(results / "quick" / "runs.csv")
    report_all("quick", results, spec_path.parent, plots=False, log=lambda s: None)
    assert not (results / "quick" / "tables" / "tiny_cifar_excitation.md").exists()

    def run_of(model, seed):
        return next(r for r in rows if r["label.model"] == model and r["label.se"] == "SENet"
                    and r["seed"] == str(seed) and r["status"] == "finished")

    def analyse(folder, gates, spec_adj):
        (folder / "analysis").mkdir(parents=True)
        (folder / "analysis" / "excitation_summary.csv").write_text(
            "block,depth_index,specificity_adj,saturation_share,mean_gate,std_gate\n" + "".join(
                f"SE_1_{i + 1},{i},{a},{0.1 * i},{g},0.05\n" for i, (g, a) in enumerate(zip(gates, spec_adj))))

    # seed 1 was adopted from another experiment: its analysis lies where it was trained
    adopted = run_of("ResNet-110", 1)
    summary_json = results / "runs" / "tiny_cifar" / adopted["run_id"] / "summary.json"
    summary_json.write_text(json.dumps({**json.loads(summary_json.read_text()), "reused_from": "donor/abcdef012345"}))
    analyse(results / "runs" / "donor" / "abcdef012345", [0.7, 0.8], [0.4, 0.6])
    collect(results, "quick")
    report_spec(spec, "quick", results, plots=False)  # only an adopted run analysed: the donor's table has it
    assert not (results / "quick" / "tables" / "tiny_cifar_excitation.md").exists()
    analyse(results / "runs" / "tiny_cifar" / run_of("ResNet-110", 0)["run_id"], [0.5, 0.9], [0.2, 0.4])
    assert main(["report", str(spec_path), "--profile", "quick", "--results", str(results), "--no-plots"]) == 0
    out = capsys.readouterr().out
    tables = results / "quick" / "tables"
    assert f"tiny_cifar excitation over seeds: {tables / 'tiny_cifar_excitation.md'}" in out
    md = (tables / "tiny_cifar_excitation.md").read_text()
    assert "| ResNet-110 / SENet | SE_1_1 | 2 | 0.600 ± 0.141 | 0.050 ± 0.000 | 0.300 ± 0.141 | 0.000 ± 0.000 |" in md
    assert "| ResNet-110 / SENet | SE_1_2 | 2 | 0.850 ± 0.071 | 0.050 ± 0.000 | 0.500 ± 0.141 | 0.100 ± 0.000 |" in md
    assert "ResNet-164" not in md.split("Notes:")[0]  # no analysed run
    assert "Finished but not analysed" in md and "ResNet-110 / SENet seed 2" in md
    assert f"seed 1 ({adopted['run_id']})" in md and "**Data:** CIFAR-10 (synthetic test store)" in md
    recs = read_csv(tables / "tiny_cifar_excitation.csv")
    assert [(r["block"], r["seeds"]) for r in recs] == [("SE_1_1", "0 1"), ("SE_1_2", "0 1")]
    assert float(recs[1]["mean_gate_mean"]) == pytest.approx(0.85)
    assert float(recs[1]["specificity_adj_std"]) == pytest.approx(0.1414213562, abs=1e-9)
    assert (tables / "tiny_cifar_excitation.tex").read_text().startswith("% tiny_cifar_excitation")
    report_all("quick", results, spec_path.parent, plots=False, log=lambda s: None)
    index = (tables / "README.md").read_text()
    assert "## Excitation over seeds" in index and "| [tiny_cifar_excitation](tiny_cifar_excitation.md) | tiny_cifar | 2 |" in index


def test_a_left_out_run_says_why_and_which_run_is_shown(tmp_path):
    """Two finished runs of one cell and seed: the spec's own is shown, and the note says the other was made
    with another recipe (say, an earlier reading of the network) rather than calling it a plain duplicate."""
    spec, _, results = make_store(tmp_path, TINY_CIFAR, "tiny_cifar", CIFAR_ERRORS)
    runs, _ = expand(spec, "quick")
    own = next(rc for rc in runs if rc.labels == {"model": "ResNet-110", "se": "original"} and rc.seed == 0)
    earlier = own.model_copy(update={"epochs": 5})
    assert earlier.run_id != own.run_id
    write_run(results, earlier, 1.0)  # an error no table cell may show
    collect(results, "quick")
    report = report_spec(spec, "quick", results, plots=False)
    text = report.markdown_path.read_text()
    assert (f"Not used: {earlier.run_id} (model=ResNet-110, se=original, seed 0: made with another recipe than "
            f"the spec now gives; {own.run_id} is shown).") in text
    assert float(cell(read_csv(report.tables[2]), "ResNet-110", "original")["mean"]) == 11.0


# ---- two profiles paired run for run (bf16 vs fp32) -----------------------------------------------------

TINY_PAIRS = """
title: "Tiny: one recipe in fp32 and bf16 (synthetic store)"
source: {file: 003_a73290d79b60d9ae.txt, table: "TABLE 4 Classification error (%) on CIFAR-10",
         reference: 003_cifar10.csv, metrics: {top1_err: "{column}"}}
base:
  model: {name: resnet20}
  data: {name: cifar10-embedded}
  epochs: 3
  batch_size: 64
seeds: [0, 1, 2]
sweep:
  - axis: se
    ref: column
    values:
      - {label: original, ref: original, baseline: true, set: {model.se: null}}
      - {label: SENet, ref: SENet, set: {model.se: {variant: se, reduction: 16}}}
profiles:
  fp32: {description: "the recipe"}
  bf16: {description: "the recipe with bf16 autocast", set: {amp: bf16}}
  long: {description: "the recipe over twice the epochs", set: {epochs: 6}}
"""


def test_paired_profiles_give_per_row_deltas_and_name_what_differs(tmp_path, capsys):
    fp32 = {("original",): {0: 10.0, 1: 10.5, 2: 9.0}, ("SENet",): {0: 9.0, 1: 9.4}}
    bf16 = {("original",): {0: 9.0, 1: 10.0, 2: 9.5}, ("SENet",): {1: 9.9}}
    make_store(tmp_path, TINY_PAIRS, "tiny_pairs", fp32, profile="fp32",
               per_run=lambda rc: {"device_name": "Other CPU" if rc.seed == 2 else "Test CPU"})
    _, spec_path, results = make_store(tmp_path, TINY_PAIRS, "tiny_pairs", bf16, profile="bf16")
    assert main(["report", str(spec_path), "--profile", "bf16", "--paired-with", "fp32",
                 "--results", str(results)]) == 0
    out = capsys.readouterr().out
    tables = results / "bf16" / "tables"
    assert f"tiny_pairs_vs_fp32: {tables / 'tiny_pairs_vs_fp32.md'}" in out
    md = (tables / "tiny_pairs_vs_fp32.md").read_text()
    assert "- **Differs in:** amp: 'bf16' vs 'off'" in md  # the one recipe change, read from the configs
    assert "`fp32` trained on more than one machine: Test CPU (cpu, 2 threads): original (seeds 0, 1), SENet " \
           "(seeds 0, 1); Other CPU (cpu, 2 threads): original (seed 2)." in md
    assert "`bf16` trained on more than one machine" not in md
    rows = {r["row"]: r for r in read_csv(tables / "tiny_pairs_vs_fp32.csv")}
    # original: bf16 - fp32 per seed = -1.0, -0.5, +0.5
    diffs = [-1.0, -0.5, 0.5]
    m = sum(diffs) / 3
    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / 2)
    half = T_975_DF2 * sd / math.sqrt(3)
    orig = rows["original"]
    assert orig["delta_n"] == "3" and orig["seeds"] == "0 1 2"
    assert float(orig["delta"]) == pytest.approx(m)
    assert float(orig["delta_low"]) == pytest.approx(m - half)
    assert float(orig["delta_high"]) == pytest.approx(m + half)
    assert float(orig["mean"]) == pytest.approx(9.5) and float(orig["mean_against"]) == pytest.approx(29.5 / 3)
    # SENet: one seed in common -> a delta, no interval; the cells keep every seed each profile has
    se = rows["SENet"]
    assert se["delta_n"] == "1" and float(se["delta"]) == pytest.approx(0.5) and se["delta_low"] == ""
    assert se["n"] == "1" and se["n_against"] == "2"
    assert "+0.50 (n=1, no interval)" in md
    assert (tables / "tiny_pairs_vs_fp32.tex").read_text().startswith("% tiny_pairs_vs_fp32")


# Schedule length: SE − plain per seed is -1.0, -1.1, +0.2 at 3 epochs and -0.5, -1.2, -0.5 at 6, so the
# effect changes by +0.5, -0.1, -0.7 (mean -0.1, sd 0.6). Seed 2's SE run at 6 epochs is on another CPU.
SHORT = {("original",): {0: 10.0, 1: 10.5, 2: 9.0}, ("SENet",): {0: 9.0, 1: 9.4, 2: 9.2}}
LONG = {("original",): {0: 8.0, 1: 8.6, 2: 7.5}, ("SENet",): {0: 7.5, 1: 7.4, 2: 7.0}}
EPYC = "AMD EPYC [avx512_bf16]"


def schedule_store(tmp_path):
    make_store(tmp_path, TINY_PAIRS, "tiny_pairs", SHORT, profile="fp32", per_run=lambda rc: {"device_name": EPYC})
    return make_store(tmp_path, TINY_PAIRS, "tiny_pairs", LONG, profile="long", per_run=lambda rc: {
        "device_name": "Intel(R) Xeon(R) [amx_bf16]" if (rc.seed, rc.model.se is None) == (2, False) else EPYC})


def test_schedule_pair_reports_how_the_longer_schedule_changes_the_effect(tmp_path, capsys):
    from sebench.report.data import gather
    from sebench.report.pairing import profile_pair

    spec, spec_path, results = schedule_store(tmp_path)
    short, long = gather(spec, "fp32", results), gather(spec, "long", results)
    for a, b in ((short, long), (long, short)):  # ordered whichever way it is asked: longer − shorter
        pair = profile_pair(a, b)
        assert (pair.changed, pair.reference, pair.field) == (long, short, "epochs")
        assert (pair.side(long), pair.side(short)) == ("6 epochs", "3 epochs")
    assert main(["report", str(spec_path), "--profile", "long", "--paired-with", "fp32",
                 "--results", str(results)]) == 0
    tables = results / "long" / "tables"
    md = (tables / "tiny_pairs_vs_fp32.md").read_text()
    assert "- **Differs in:** epochs: 6 vs 3" in md
    rows = {(r["kind"], r["row"]): r for r in read_csv(tables / "tiny_pairs_vs_fp32.csv")}
    assert float(rows[("arm", "original")]["delta"]) == pytest.approx((-2.0 - 1.9 - 1.5) / 3)
    eff = rows[("effect", "SENet − original")]
    assert float(eff["mean"]) == pytest.approx((-0.5 - 1.2 - 0.5) / 3)  # the effect at 6 epochs
    assert float(eff["mean_against"]) == pytest.approx((-1.0 - 1.1 + 0.2) / 3)  # and at 3
    short_effects = (-1.0, -1.1, 0.2)
    assert float(eff["std_against"]) == pytest.approx(
        math.sqrt(sum((d - sum(short_effects) / 3) ** 2 for d in short_effects) / 2))
    half = T_975_DF2 * 0.6 / math.sqrt(3)
    assert eff["delta_n"] == "3" and eff["seeds"] == "0 1 2"
    assert float(eff["delta"]) == pytest.approx(-0.1)
    assert float(eff["delta_low"]) == pytest.approx(-0.1 - half)
    assert float(eff["delta_high"]) == pytest.approx(-0.1 + half)
    assert "| effect: SENet − original | -0.73 [" in md
    assert f"| -0.10 [{-0.1 - half:+.2f}, {-0.1 + half:+.2f}] (n=3) |" in md
    assert "**Effect rows:**" in md


def test_ledger_has_the_effect_change_across_schedules_with_its_machines(tmp_path):
    from sebench.report.claims import build_ledger

    _, _, results = schedule_store(tmp_path)
    ledger = build_ledger(results, tmp_path).by_id()
    row = ledger["long-vs-fp32/tiny_pairs/senet-vs-original/top1_err"]
    assert row.claim == ("SENet − original at 6 epochs minus at 3 epochs, CIFAR-10 (synthetic test store), "
                         "long vs fp32: top-1 err. (%)")
    assert row.judgement.n == 3 and row.judgement.mean == pytest.approx(-0.1)
    assert row.judgement.low == pytest.approx(-0.1 - T_975_DF2 * 0.6 / math.sqrt(3))
    assert row.pairs == {"same": [0, 1], "mixed": [2], "unknown": []}  # seed 2's SE run at 6 epochs: a Xeon
    assert row.same_only.n == 2 and row.same_only.mean == pytest.approx((0.5 - 0.1) / 2)
    assert len(row.runs) == 12  # the four runs of each seed
    arm = ledger["long-vs-fp32/tiny_pairs/original/top1_err"]  # and each arm's own change
    assert arm.claim.startswith("6 epochs vs 3 epochs, original,") and arm.judgement.n == 3
    assert ledger["long/tiny_pairs/senet-vs-original/top1_err"].judgement.n == 3  # each profile's own table


def test_a_row_only_one_profile_sweeps_stays_out_of_the_pair_table(tmp_path):
    """cifar100's full12 has a ResNet-56 row that full40 has not: full40 still pairs with full12 on the shared
    rows, and the pair table's hardware, seeds and compute lines describe those rows' runs only."""
    from sebench.report.data import duration, gather, trained_seconds
    from sebench.report.pairing import pair_table, profile_pair

    wide = TINY_PAIRS + """  fp32_wide:
    description: "fp32 with one more row"
    sweep:
      se:
        - {label: original, ref: original, baseline: true, set: {model.se: null}}
        - {label: SENet, ref: SENet, set: {model.se: {variant: se, reduction: 16}}}
        - {label: SE r4, set: {model.se: {variant: se, reduction: 4}}}
"""
    extra = {("SE r4",): {0: 50.0, 1: 51.0, 2: 52.0}}
    make_store(tmp_path, wide, "tiny_pairs", {**SHORT, **extra}, profile="fp32_wide",
               per_run=lambda rc: {"device_name": "Far CPU" if rc.labels["se"] == "SE r4" else EPYC})
    spec, _, results = make_store(tmp_path, wide, "tiny_pairs", LONG, profile="long",
                                  per_run=lambda rc: {"device_name": EPYC})
    short, long = gather(spec, "fp32_wide", results), gather(spec, "long", results)
    assert len(short.all_runs()) == 9
    pair = profile_pair(long, short)
    assert (pair.changed.profile, pair.reference.profile, pair.field) == ("long", "fp32_wide", "epochs")
    table = pair_table(spec, long, short)
    assert [r[0] for r in table.rows] == ["original", "SENet", "effect: SENet − original"]
    text = "\n".join(f"{k}: {v}" for k, v in table.header) + "\n" + "\n".join(table.footnotes)
    assert "Far CPU" not in text and "trained on more than one machine" not in text
    walls = sum(trained_seconds(r for d in (long, short) for c in d.combos if c != ("SE r4",)
                                for r in d.runs(c).values()))
    assert f"Compute behind this table: {duration(walls)} over 12 runs." in table.footnotes


def test_report_all_writes_the_pair_table_on_the_changed_side_and_indexes_it(tmp_path):
    _, _, results = schedule_store(tmp_path)
    report_all("fp32", results, tmp_path, plots=False, log=lambda _m: None)
    assert not list((results / "fp32" / "tables").glob("*_vs_*"))  # the reference side writes none
    (rep,) = report_all("long", results, tmp_path, plots=False, log=lambda _m: None)
    (other, what, paths), = rep.paired
    assert (other, what) == ("fp32", "6 epochs vs 3 epochs")
    assert [p.name for p in paths] == ["tiny_pairs_vs_fp32.md", "tiny_pairs_vs_fp32.tex", "tiny_pairs_vs_fp32.csv"]
    assert "effect: SENet − original" in paths[0].read_text()
    index = (results / "long" / "tables" / "README.md").read_text()
    assert "| [tiny_pairs_vs_fp32](tiny_pairs_vs_fp32.md) | tiny_pairs | `fp32` | 6 epochs vs 3 epochs |" in index


def test_profiles_differing_in_more_than_one_field_or_another_field_do_not_pair(tmp_path):
    from sebench.report.data import gather
    from sebench.report.pairing import profile_pair

    spec, _, results = schedule_store(tmp_path)
    make_store(tmp_path, TINY_PAIRS, "tiny_pairs", {("original",): {0: 9.0}}, profile="bf16")
    assert profile_pair(gather(spec, "bf16", results), gather(spec, "long", results)) is None  # amp and epochs
    pair = profile_pair(gather(spec, "fp32", results), gather(spec, "bf16", results))
    assert (pair.changed.profile, pair.field, pair.side(pair.changed), pair.side(pair.reference)) == \
        ("bf16", "amp", "bf16", "fp32")


@pytest.mark.parametrize("argv, message", [
    (["--profile", "bf16", "--paired-with", "fp16"], "unknown profile 'fp16'"),
    (["--profile", "bf16", "--paired-with", "bf16"], "names the report's own profile"),
    (["--profile", "bf16", "--paired-with", "fp32", "--wandb"], "not a paired table"),
])
def test_paired_profiles_mistakes_are_one_line(tmp_path, capsys, argv, message):
    _, spec_path, results = make_store(tmp_path, TINY_PAIRS, "tiny_pairs", {("original",): {0: 9.0}},
                                       profile="bf16")
    assert main(["report", str(spec_path), *argv, "--results", str(results)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# The ablation tests' recipe: SE-ResNet-20 on the embedded subset, two epochs (the numbers are written by hand).
ABLATION_BASE = """
base:
  model: {name: resnet20, se: {variant: se, reduction: 16}}
  data: {name: cifar10-embedded}
  epochs: 2
  batch_size: 64
"""

TINY_GATES = """
title: "Tiny: excitation gate ablation (synthetic store)"
source: {file: 003_a73290d79b60d9ae.txt, table: "Ablation: excitation operator", reference: 003_ablation_excitation.csv,
         metrics: {top1_err: "top-1 err."}}""" + ABLATION_BASE + """seeds: [0, 1, 2, 3, 4]
sweep:
  - axis: excitation
    ref: row
    values:
      - {label: ReLU, ref: ReLU, set: {model.se.gate: relu}}
      - {label: Tanh, ref: Tanh, set: {model.se.gate: tanh}}
      - {label: Sigmoid, ref: Sigmoid, baseline: true, set: {model.se.gate: sigmoid}}
      - {label: "no SE", set: {model: {se: null}}}
profiles:
  quick: {}
"""

NOISE = (0.0, 0.1, -0.1, 0.05, -0.05)


@pytest.mark.parametrize("no_se, relu, expected", [
    # no SE 2 points better than SE: SE hurts; ReLU removes the harm, tanh's change is noise
    (-2.0, -2.0, "Standard SE hurts in this setting; the rows resolved better than Sigmoid (ReLU) remove at "
                 "least part of that harm."),
    (-2.0, 0.0, "Standard SE hurts in this setting; no row is resolved better than Sigmoid, so no design "
                "choice here is shown to remove it."),
    (+2.0, +3.0, "Standard SE helps in this setting; the rows resolved worse than Sigmoid (ReLU) lose at least "
                 "part of that gain."),
    (None, +3.0, "SE's own effect is not resolved here, so the other rows say which design choices differ "
                 "from Sigmoid, not whether they remove a harm or keep a gain."),
])
def test_an_ablation_against_standard_se_says_how_to_read_it_from_ses_own_effect(tmp_path, no_se, relu, expected):
    """Issue 35: an ablation's rows compare with standard SE; whether a row 'removes SE's harm' or 'keeps its
    gain' depends on SE's own effect (the no-SE context row), which the table states from its own verdicts."""
    sigmoid = {s: 40.0 + s for s in range(5)}
    wobble = (1.5, -1.2, 0.9, -1.4, 1.1)  # an unresolved no-SE row: differences of both signs
    errors = {
        ("Sigmoid",): sigmoid,
        ("ReLU",): {s: v + relu + NOISE[s] for s, v in sigmoid.items()},
        ("Tanh",): {s: v + NOISE[(s + 2) % 5] for s, v in sigmoid.items()},
        ("no SE",): {s: v + (wobble[s] if no_se is None else no_se + NOISE[(s + 1) % 5])
                     for s, v in sigmoid.items()},
    }
    spec, _, results = make_store(tmp_path, TINY_GATES, "tiny_gates", errors)
    report_spec(spec, "quick", results, plots=False)
    text = (results / "quick" / "tables" / "tiny_gates.md").read_text()
    note = next(line for line in text.splitlines() if "SE's own effect here" in line)
    sign = "+" if no_se is not None and no_se < 0 else "-"  # SE − no SE flips the no-SE row's delta (wobble: +0.18)
    assert f"Sigmoid − no SE = {sign}" in note and "(n=5;" in note
    assert note.endswith(expected), note


def test_no_se_effect_note_where_the_baseline_is_no_se(cifar_store):
    """SE vs original (baseline: no SE) states SE's effect in its own delta column: no extra note."""
    spec, _, results = cifar_store
    report_spec(spec, "quick", results, plots=False)
    assert "SE's own effect here" not in (results / "quick" / "tables" / "tiny_cifar.md").read_text()


TINY_STAGES = """
title: "Tiny: SE in one stage vs all stages (synthetic store)"
source: {file: 003_a73290d79b60d9ae.txt, table: "Ablation: different stages", reference: 003_ablation_stages.csv,
         metrics: {top1_err: "top-1 err."}}""" + ABLATION_BASE + """seeds: [0, 1, 2, 3]
sweep:
  - axis: stage
    ref: row
    values:
      - {label: no SE, ref: ResNet-50, baseline: true, set: {model.se: null}}
      - {label: S1, set: {model.se_stages: [1]}}
      - {label: S2, ref: SE_Stage_2, set: {model.se_stages: [2]}}
      - {label: All, ref: SE_All, second_baseline: true, set: {model.se_stages: null}}
profiles:
  quick: {}
"""


def test_a_second_baseline_adds_paired_deltas_against_it_in_a_holm_family_of_their_own(tmp_path, capsys):
    """Issue 35 step 2: each one-stage row against SE in all stages (the source's 'up to +0.75'), paired by
    seed, besides the rows' deltas against no SE; adding the second baseline leaves those untouched."""
    all_ = {0: 40.0, 1: 41.0, 2: 39.5, 3: 40.5}
    errors = {("no SE",): {s: v + 0.3 * (-1) ** s for s, v in all_.items()},
              ("S1",): {s: v + 1.0 + NOISE[s] for s, v in all_.items()},  # resolved worse than All
              ("S2",): {s: v + NOISE[s + 1] for s, v in all_.items()},  # no different from All
              ("All",): all_}
    spec, _, results = make_store(tmp_path, TINY_STAGES, "tiny_stages", errors)
    rep = report_spec(spec, "quick", results, plots=False)
    rows = read_csv(rep.tables[2])
    s1, s2 = cell(rows, "S1", ""), cell(rows, "S2", "")
    diffs = [1.0 + NOISE[s] for s in range(4)]
    m = sum(diffs) / 4
    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / 3)
    half = 3.182446305284263 * sd / 2  # t(0.975, 3) * sd / sqrt(4)
    assert s1["second_baseline"] == "stage=All" and s1["second_delta_n"] == "4"
    assert float(s1["second_delta"]) == pytest.approx(m)
    assert float(s1["second_delta_low"]) == pytest.approx(m - half) and float(s1["second_delta_high"]) == \
        pytest.approx(m + half)
    assert s1["second_verdict"] == "worse" and s1["second_source_delta"] == ""  # S1 has no source row
    assert float(s2["second_source_delta"]) == pytest.approx(0.75)  # 23.03 - 22.28
    assert s2["second_verdict"] == "contradicts the source"
    # the baselines compare with nothing in the second columns; All is the second baseline itself
    assert cell(rows, "no SE", "")["second_delta"] == "" and cell(rows, "All", "")["second_delta"] == ""
    assert cell(rows, "All", "")["baseline"] == "stage=no SE"  # its own delta is still against no SE
    text = (results / "quick" / "tables" / "tiny_stages.md").read_text()
    assert "| Δ top-1 err. (%) vs All (95% CI) | source Δ | verdict |" in text
    assert "second baseline 'All' (same recipe otherwise), their verdicts a Holm family of their own" in text

    # Without the second baseline the deltas against no SE, and their Holm-adjusted verdicts, are the same.
    plain = tmp_path / "plain"
    plain.mkdir()
    spec0, _, results0 = make_store(plain, TINY_STAGES.replace(", second_baseline: true", ""), "tiny_stages",
                                    errors)
    rows0 = read_csv(report_spec(spec0, "quick", results0, plots=False).tables[2])
    assert "second_delta" not in rows0[0]
    main_fields = ["delta", "delta_low", "delta_high", "source_delta", "verdict"]
    assert [[r[k] for k in main_fields] for r in rows] == [[r[k] for k in main_fields] for r in rows0]

    # the ledger carries the second comparisons as claims of their own, with the table's verdicts
    folder = tmp_path / "specs"
    folder.mkdir()
    (folder / "tiny_stages.yaml").write_text(TINY_STAGES)
    assert main(["claims", "--results", str(results), "--folder", str(folder)]) == 0
    capsys.readouterr()
    ledger = {r["id"]: r for r in read_csv(results / "claims.csv")}
    assert ledger["quick/tiny_stages/s1-vs-all/top1_err"]["verdict"] == "worse"
    assert ledger["quick/tiny_stages/s2-vs-all/top1_err"]["source_delta"] == "+0.75"
    assert "quick/tiny_stages/s1-vs-no-se/top1_err" in ledger

    # the per-epoch effects plot draws both families, the second's curves after the first's
    from sebench.report.data import gather
    from sebench.report.plots import effect_curves

    curves = effect_curves(gather(spec, "quick", results))
    assert [(c.label, c.second) for c in curves] == [("S1 − no SE", False), ("S2 − no SE", False),
                                                     ("All − no SE", False), ("S1 − All", True), ("S2 − All", True)]
    assert curves[3].means[-1] == pytest.approx(m) and curves[3].n == [4, 4]  # the final epoch is the table's Δ
