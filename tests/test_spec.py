"""Specs: every file in experiments/ loads and expands; broken specs end in one clear message."""

from pathlib import Path
import textwrap

import pytest

from sebench.cli import main
from sebench.errors import UserError
from sebench.spec import RunConfig, expand, list_specs, load_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = list_specs(ROOT / "experiments")


def test_there_is_a_spec_for_every_source_table():
    names = {p.stem for p in SPECS}
    expected = {"se_imagenet", "se_mobile", "cifar10_se_vs_baseline", "cifar100_se_vs_baseline",
                "ablation_reduction", "ablation_squeeze", "ablation_excitation", "ablation_stages",
                "ablation_integration", "ablation_se3x3", "ablation_nosqueeze", "variants_cnn3_cifar10",
                "variants_resnet18_cifar10", "variants_resnet18_cifar100", "variants_resnet18_svhn",
                "agnostic_se_resnet50"}
    assert expected <= names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_spec_loads_and_expands_for_every_profile(path):
    spec = load_spec(path)
    assert {"paper", "quick", "smoke"} <= set(spec.profiles)
    for profile in spec.profiles:
        runs, pending = expand(spec, profile)
        assert runs or pending
        assert all(isinstance(r, RunConfig) and r.experiment == spec.name for r in runs)
        assert len({r.run_id for r in runs}) == len(runs)  # no two runs collide
        baselines = [v for a in spec.sweep for v in a.values if v.baseline]
        assert baselines, "every table needs a same-recipe baseline for paired deltas"


def test_run_ids_are_content_hashes():
    spec = load_spec(ROOT / "experiments" / "cifar10_se_vs_baseline.yaml")
    a, _ = expand(spec, "quick")
    b, _ = expand(spec, "quick")
    assert [r.run_id for r in a] == [r.run_id for r in b]
    c, _ = expand(spec, "quick", {"epochs": 3})
    assert not {r.run_id for r in a} & {r.run_id for r in c}
    # execution settings do not change what a run is
    moved = a[0].model_copy(update={"execution": a[0].execution.model_copy(update={"device": "cuda"})})
    assert moved.run_id == a[0].run_id


@pytest.mark.parametrize("fp32_profile, epochs", [("full40", 40), ("full", 30)])
def test_the_bf16_profile_pairs_run_for_run_with_the_fp32_one(fp32_profile, epochs):
    """<profile>_bf16 measures what bf16 does to accuracy: every run must be its fp32 partner (same row, seed
    and recipe) but for amp, or the paired comparison would compare recipes too."""
    spec = load_spec(ROOT / "experiments" / "cifar10_se_vs_baseline.yaml")
    fp32, _ = expand(spec, fp32_profile)
    bf16, _ = expand(spec, f"{fp32_profile}_bf16")
    assert len(fp32) == len(bf16) == 10 and {r.epochs for r in fp32} == {epochs}
    partner = {(tuple(sorted(r.labels.items())), r.seed): r for r in fp32}
    for run in bf16:
        twin = partner[(tuple(sorted(run.labels.items())), run.seed)]
        assert run.amp == "bf16" and twin.amp == "off"
        assert run.model_dump(exclude={"amp", "profile"}) == twin.model_dump(exclude={"amp", "profile"})
        assert run.run_id != twin.run_id


def test_profiles_and_sweeps_apply_in_order():
    spec = load_spec(ROOT / "experiments" / "ablation_reduction.yaml")
    paper, _ = expand(spec, "paper")
    quick, _ = expand(spec, "quick")
    r8 = next(r for r in paper if r.labels["reduction"] == "r8")
    assert r8.model.name == "resnet50" and r8.model.se.reduction == 8 and r8.model.se.bias is False
    assert r8.optim.label_smoothing == 0.1 and r8.data.name == "imagefolder"
    base = next(r for r in quick if r.labels["reduction"] == "original")
    assert base.model.se is None and base.model.name == "resnet20" and base.data.name == "cifar10-embedded"


def test_pending_rows_are_listed(tmp_path):
    text = GOOD.replace("      - {label: SE, set: {model.se: {reduction: 4}}}",
                        "      - {label: SE, set: {model.se: {reduction: 4}}}\n"
                        "      - {label: later, pending: \"not in the zoo yet\"}")
    runs, pending = expand(load_spec(write(tmp_path, text)), "smoke")
    assert len(runs) == 2 and [(p.labels["se"], p.reason) for p in pending] == [("later", "not in the zoo yet")]


def test_no_source_row_is_pending_where_the_network_exists():
    for name in ("se_imagenet", "se_mobile", "cifar10_se_vs_baseline"):
        _, pending = expand(load_spec(ROOT / "experiments" / f"{name}.yaml"), "paper")
        assert not pending, name


GOOD = """
title: t
source: {file: 003_a73290d79b60d9ae.txt, table: T}
base:
  model: {name: resnet20}
  data: {name: synthetic}
  epochs: 1
seeds: [0]
sweep:
  - axis: se
    values:
      - {label: none, baseline: true, set: {model.se: null}}
      - {label: SE, set: {model.se: {reduction: 4}}}
profiles:
  smoke: {}
"""


def write(tmp_path, text, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_good_spec_loads(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    runs, _ = expand(spec, "smoke")
    assert len(runs) == 2


def test_the_old_source_seed_key_still_reads_with_a_deprecation_message(tmp_path):
    """`source.seed` named the source text's file before "seed" meant only a random seed."""
    with pytest.warns(DeprecationWarning, match="source.seed is deprecated: name the source text's file source.file"):
        spec = load_spec(write(tmp_path, GOOD.replace("{file: 003", "{seed: 003")))
    assert spec.source[0].file == "003_a73290d79b60d9ae.txt"
    (tmp_path / "new").mkdir()
    same = load_spec(write(tmp_path / "new", GOOD))
    assert [rc.run_id for rc in expand(spec, "smoke")[0]] == [rc.run_id for rc in expand(same, "smoke")[0]]


def test_reference_csvs_with_the_old_first_column_still_read(tmp_path):
    from sebench.report.reference import COLUMNS, load_reference

    old = tmp_path / "old.csv"
    old.write_text("source_seed,source_table,row,column,value,unit,metric,note\n"
                   "003_a73290d79b60d9ae.txt,T,ResNet-110,original,6.37,% error,top1_err,\n")
    frame = load_reference(old)
    assert list(frame.columns) == COLUMNS and frame["source_file"].tolist() == ["003_a73290d79b60d9ae.txt"]


def test_equivalence_margin_is_optional_per_metric(tmp_path):
    """A spec may declare the TOST margin per metric (in the metric's units); unset metrics take
    sebench.report.verdicts.DEFAULT_MARGINS."""
    from sebench.report.verdicts import DEFAULT_MARGINS, margin_for

    assert load_spec(write(tmp_path, GOOD)).equivalence_margin == {}
    spec = load_spec(write(tmp_path, GOOD + "equivalence_margin: {top1_err: 0.3, test_loss: 0.01}\n", "m.yaml"))
    assert spec.equivalence_margin == {"top1_err": 0.3, "test_loss": 0.01}
    assert margin_for("top1_err", spec.equivalence_margin) == 0.3
    assert margin_for("top5_err", spec.equivalence_margin) == DEFAULT_MARGINS["top5_err"] == 0.5


BROKEN = {
    "unknown top-level key": (GOOD + "colour: red\n", "colour", "allowed: name, title"),
    "unknown key in base": (GOOD.replace("epochs: 1", "epochs: 1\n  epoks: 2"), "epoks", "allowed:"),
    "unknown key in model": (GOOD.replace("{name: resnet20}", "{name: resnet20, widht: 2}"), "model.widht",
                             "allowed: name, num_classes"),
    "wrong type epochs": (GOOD.replace("epochs: 1", "epochs: many"), "epochs", "integer"),
    "negative epochs": (GOOD.replace("epochs: 1", "epochs: -3"), "epochs", "greater than or equal to 1"),
    "unknown model": (GOOD.replace("resnet20", "resnet21"), "model.name", "allowed: 'resnet20'"),
    "unknown dataset": (GOOD.replace("synthetic", "mnist"), "data.name", "allowed: 'cifar10'"),
    "unknown variant": (GOOD.replace("{reduction: 4}", "{variant: turbo}"), "model.se.variant",
                        "allowed: 'se', 'slow_squeeze'"),
    "unknown gate": (GOOD.replace("{reduction: 4}", "{gate: softmax}"), "model.se.gate", "allowed: 'sigmoid'"),
    "unknown squeeze": (GOOD.replace("{reduction: 4}", "{squeeze: sum}"), "model.se.squeeze", "allowed: 'avg'"),
    "unknown position": (GOOD.replace("{reduction: 4}", "{position: inside}"), "model.se.position",
                         "allowed: 'standard'"),
    "zero width": (GOOD.replace("{reduction: 4}", "{latent_channels: 0}"), "model.se.latent_channels",
                   "no hidden channels"),
    "sweep value of wrong type": (GOOD.replace("{reduction: 4}", "{reduction: four}"), "model.se.reduction",
                                  "integer"),
    "empty sweep": (GOOD.split("sweep:")[0] + "sweep:\n  - axis: se\n    values: []\nprofiles:\n  smoke: {}\n",
                    "sweep.values", "at least 1"),
    "no seeds": (GOOD.replace("seeds: [0]", "seeds: []"), "seeds", "at least 1"),
    "no profiles": (GOOD.replace("profiles:\n  smoke: {}", "profiles: {}"), "profiles", "at least 1"),
    "missing title": (GOOD.replace("title: t\n", ""), "title", "Field required"),
    "unknown stage": (GOOD.replace("{reduction: 4}}", "{reduction: 4}, model.se_stages: [7]}"),
                      "model.se_stages", "allowed: 1, 2, 3"),
    "yaml syntax error": (GOOD.replace("epochs: 1", "epochs: [1"), None, "YAML syntax error at line"),
    "missing include": ("include: nowhere.yaml\n" + GOOD, "include", "included file not found"),
    "profile replaces unknown axis": (GOOD.replace("smoke: {}", "smoke: {sweep: {depth: []}}"),
                                      "profiles.smoke.sweep", "axes: se"),
    "spec sets seed itself": (GOOD.replace("epochs: 1", "epochs: 1\n  seed: 3"), "seed", "set by the spec"),
    "not a mapping": ("- just\n- a list\n", None, "must be a mapping"),
    "bad optimizer": (GOOD.replace("epochs: 1", "epochs: 1\n  optim: {name: adam}"), "optim.name",
                      "allowed: 'sgd'"),
    "negative equivalence margin": (GOOD + "equivalence_margin: {top1_err: -0.5}\n", "equivalence_margin",
                                    "greater than 0"),
    "equivalence margin of an unknown metric": (GOOD + "equivalence_margin: {top1_error: 0.5}\n",
                                                "equivalence_margin", "top1_err"),
    "bad dotted value": (GOOD.replace("{model.se: null}", "{model.se: null, optim.lr: -1}"), "optim.lr",
                         "greater than 0"),
    # SweepValue.second_baseline (e.g. one-stage SE vs SE in all stages): one, beside the baseline, in a row axis
    "two baselines in an axis": (GOOD.replace("{label: SE, set", "{label: SE, baseline: true, set"), "sweep.se",
                                 "more than one value is marked `baseline: true`: ['none', 'SE']"),
    "second baseline without a baseline": (
        GOOD.replace("{label: none, baseline: true,", "{label: none,").replace(
            "{label: SE, set", "{label: SE, second_baseline: true, set"), "sweep.se", "axis without a baseline"),
    "baseline and second baseline on one value": (
        GOOD.replace("{label: none, baseline: true,", "{label: none, baseline: true, second_baseline: true,"),
        "sweep.se", "marked both `baseline` and `second_baseline`"),
    "second baseline in a column axis": (
        GOOD.replace("  - axis: se\n", "  - axis: se\n    ref: column\n").replace(
            "{label: SE, set", "{label: SE, second_baseline: true, set"), "sweep.se", "column axis 'se'"),
    "baselines on two axes": (
        GOOD.replace("profiles:", "  - axis: r\n    values:\n      - {label: r4, baseline: true}\n"
                                  "      - {label: r8, set: {epochs: 2}}\nprofiles:"),
        "sweep", "more than one axis marks a baseline in profile 'smoke': ['se', 'r']"),
}


@pytest.mark.parametrize("case", list(BROKEN), ids=list(BROKEN))
def test_broken_spec_gives_one_clear_message(case, tmp_path, capsys):
    text, field, fragment = BROKEN[case]
    path = write(tmp_path, text)
    with pytest.raises(UserError) as err:
        load_spec(path)
    msg = err.value.render()
    assert str(path) in msg
    if field:
        assert field in msg
    assert fragment in msg
    # the CLI: exit code 2, one line, no traceback, nothing written to the store
    results = tmp_path / "results"
    assert main(["run", str(path), "--profile", "smoke", "--results", str(results)]) == 2
    out = capsys.readouterr()
    assert "Traceback" not in out.err and out.err.strip().count("\n") == 0 and fragment in out.err
    assert not results.exists()


def test_include_cycle(tmp_path):
    write(tmp_path, "include: b.yaml\n", "a.yaml")
    write(tmp_path, "include: a.yaml\n", "b.yaml")
    with pytest.raises(UserError, match="include cycle: a.yaml -> b.yaml -> a.yaml"):
        load_spec(tmp_path / "a.yaml")


def test_includes_merge_and_the_including_file_wins(tmp_path):
    write(tmp_path, "base:\n  epochs: 9\n  batch_size: 32\nseeds: [5]\n", "_shared.yaml")
    spec = load_spec(write(tmp_path, "include: _shared.yaml\n" + GOOD.replace("seeds: [0]\n", "")))
    runs, _ = expand(spec, "smoke")
    assert runs[0].epochs == 1 and runs[0].batch_size == 32 and runs[0].seed == 5


def test_unknown_profile_on_the_cli(capsys):
    assert main(["plan", str(ROOT / "experiments" / "cifar10_se_vs_baseline.yaml"), "--profile", "fast",
                 "--no-estimate"]) == 2
    assert "allowed: 'paper', 'quick', 'smoke'" in capsys.readouterr().err


def test_only_selects_runs_by_label_and_seed(tmp_path, capsys):
    spec = str(ROOT / "experiments" / "ablation_reduction.yaml")
    argv = ["plan", spec, "--profile", "quick", "--no-estimate", "--results", str(tmp_path)]
    assert main(argv + ["--only", "reduction=r2", "--only", "reduction=original", "--only", "seed=1"]) == 0
    out = capsys.readouterr().out
    assert "reduction=r2" in out and "reduction=original" in out and "reduction=r4" not in out
    assert "2 runs (2 missing)" in out  # two rows x one seed


@pytest.mark.parametrize("only, message", [("depth=r2", "names no sweep axis"),
                                           ("reduction=r3", "reduction has no value 'r3'"),
                                           ("seed=7", "seed has no value '7'")])
def test_only_with_a_wrong_label_is_one_line(tmp_path, capsys, only, message):
    spec = str(ROOT / "experiments" / "ablation_reduction.yaml")
    assert main(["run", spec, "--profile", "quick", "--results", str(tmp_path), "--only", only]) == 2
    err = capsys.readouterr().err
    assert message in err and "--only" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()  # nothing started, nothing written


def test_plan_estimate_is_epochs_times_the_calibrated_rate_and_says_when_the_cpu_was_busy(tmp_path, capsys,
                                                                                       monkeypatch):
    import os
    from sebench import estimate, runner
    from sebench.bench import count_flops
    from sebench.data import get_info
    from sebench.models import build_model

    spec = ROOT / "experiments" / "cifar10_se_vs_baseline.yaml"
    runs, _ = expand(load_spec(spec), "quick")
    info = get_info(runs[0].data.name)
    n_train = min(info.splits[0], runs[0].data.train_subset or info.splits[0])
    n_test = min(info.splits[1], runs[0].data.test_subset or info.splits[1])
    plain = count_flops(build_model("resnet20", info.num_classes), (3, 32, 32))
    # A rate at which the plain ResNet-20 takes exactly one minute per epoch (no measurement in the test).
    monkeypatch.setattr(estimate, "_training_rate", lambda device: plain * (n_train + n_test / 3) / 60)
    plain_run = next(r for r in runs if not r.model.se)
    assert estimate.estimate_seconds(plain_run, device="cpu") == pytest.approx(60 * plain_run.epochs)

    argv = ["plan", str(spec), "--profile", "quick", "--results", str(tmp_path), "--device", "cpu"]
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.3, 0.3, 0.3))
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "estimated time to finish on cpu, one run at a time:" in out and "busy" not in out
    monkeypatch.setattr(os, "getloadavg", lambda: (2.4, 2.0, 1.0))
    assert main(argv) == 0
    assert "measured while the CPU was busy, load 2.4 on 2 cores: too high" in capsys.readouterr().out


def test_estimate_counts_se_surgery(monkeypatch):
    """A run with SE surgery costs more than its plain network: estimate.py builds the model as the run does."""
    from sebench import estimate
    from sebench.spec import SurgeryCfg

    monkeypatch.setattr(estimate, "_training_rate", lambda device: 1e9)
    plain = RunConfig(model={"name": "resnet20"}, data={"name": "cifar10-embedded"}, epochs=1)
    surgery = plain.model_copy(update={"model": plain.model.model_copy(
        update={"surgery": SurgeryCfg(min_channels=16, latent_channels=4)})})
    assert estimate.estimate_seconds(surgery, "cpu") > estimate.estimate_seconds(plain, "cpu")


def _finished(results, rc, wall, device=None, threads=None, **extra):
    """A finished run's record in results/runs, as much of it as the estimates read."""
    import json

    import yaml

    from sebench.bench import device_name

    d = results / "runs" / rc.experiment / rc.run_id
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"run_id": rc.run_id, **rc.model_dump(mode="json")}))
    (d / "env.json").write_text(json.dumps({"device_name": device or device_name("cpu"), "threads": threads}))
    (d / "summary.json").write_text(json.dumps({
        "status": "finished", "run_id": rc.run_id, "experiment": rc.experiment, "profile": rc.profile,
        "model": rc.model.name, "se": "none", "dataset": "CIFAR-10", "seed": rc.seed, "epochs": rc.epochs,
        "batch_size": rc.batch_size, "wall_s": wall, "final_test_top1_err": 10.0, **extra}))


def test_plan_estimates_from_finished_seeds_of_the_same_recipe_on_this_device(tmp_path, capsys, monkeypatch):
    """A row whose recipe (seed aside) already finished here is estimated by those runs' median wall time,
    not by the calibration; runs on another device model, adopted runs and other recipes do not count. A
    finished row shows what it took (an adopted one: its source's time), never an estimate."""
    from sebench import estimate, runner

    spec = ROOT / "experiments" / "cifar10_se_vs_baseline.yaml"
    runs, _ = expand(load_spec(spec), "full40")  # 5 seeds
    plain = [r for r in runs if not r.model.se]
    se = next(r for r in runs if r.model.se)

    _finished(tmp_path, plain[0], 100.0)
    _finished(tmp_path, plain[1], 300.0)
    _finished(tmp_path, plain[2], 9000.0, reused_from="other/abc")  # trained once, for another experiment
    _finished(tmp_path, se, 5000.0, device="Some Other CPU")  # another machine's time says nothing about this one
    rows, _ = runner.plan(load_spec(spec), "full40", tmp_path)
    measured = estimate.measured_seconds(rows, device="cpu")
    assert measured == {r.run_id: (200.0, 2) for r in plain}
    assert se.run_id not in measured

    monkeypatch.setattr(estimate, "_training_rate", lambda device: 1e12)  # no measurement in the test
    assert main(["plan", str(spec), "--profile", "full40", "--results", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith(plain[-1].run_id))
    assert "missing" in line and "3.3 min (m2)" in line
    assert "(mN): median wall time of the N finished runs" in out
    from sebench.report.data import duration
    for run, wall in ((plain[0], 100.0), (plain[2], 9000.0), (se, 5000.0)):
        line = next(x for x in out.splitlines() if x.startswith(run.run_id))
        assert "finished" in line and line.rstrip().endswith(f"{duration(wall)} (took)")
    assert "(took): the finished run's own wall time" in out


def test_plan_scales_other_recipes_runs_here_by_epochs_or_multiply_adds(tmp_path, capsys, monkeypatch):
    """A row with no finished run of its own recipe is estimated from runs of other recipes on this device
    model in the same setting (data, batch, precision, threads): the same network at another schedule by
    its time per epoch, another network by its time per epoch and multiply-add. Runs at other threads or on
    other data do not count, and the calibration (and its busy-CPU warning) is not used."""
    import os

    from sebench import estimate
    from sebench.report.data import duration

    spec = ROOT / "experiments" / "cifar10_se_vs_baseline.yaml"
    runs, _ = expand(load_spec(spec), "full40")  # ResNet-20 and SE-ResNet-20, 40 epochs
    plain = next(r for r in runs if not r.model.se)
    se = next(r for r in runs if r.model.se)
    short = plain.model_copy(update={"experiment": "other", "epochs": 10})  # another spec, another schedule
    _finished(tmp_path, short, 1000.0, threads=1, flops=estimate._macs(plain))
    busier = short.model_copy(update={"seed": 7})
    _finished(tmp_path, busier, 99999.0, threads=2, flops=estimate._macs(plain))  # other threads
    subset = short.model_copy(update={"seed": 8, "data": short.data.model_copy(update={"train_subset": 500})})
    _finished(tmp_path, subset, 1.0, threads=1, flops=estimate._macs(plain))  # other data

    def calibration(device):
        raise AssertionError("the calibration is not needed")

    monkeypatch.setattr(estimate, "_training_rate", calibration)
    monkeypatch.setattr("sebench.engine.env.available_cpus", lambda: 2)  # the cores fit would use
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.4, 2.0, 1.0))
    argv = ["plan", str(spec), "--profile", "full40", "--results", str(tmp_path), "--device", "cpu",
            "--set", "execution.threads=1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = {x.split()[0]: x for x in out.splitlines() if x[:12] in {plain.run_id, se.run_id}}
    assert f"{duration(4000)} (e1)" in lines[plain.run_id]  # 1000 s / 10 epochs x 40
    se_seconds = 4000 * estimate._macs(se) / estimate._macs(plain)
    assert estimate._macs(se) > estimate._macs(plain) and f"{duration(se_seconds)} (f1)" in lines[se.run_id]
    assert "(eN): the median time an epoch of N finished runs of the same network" in out
    assert "(fN): the median time per epoch and multiply-add of N finished runs of other networks" in out
    assert "busy" not in out and "(mN)" not in out
    # Without threads set a run takes every core it may use (two here): only the run at two threads counts.
    assert main(argv[:-2]) == 0
    assert f"{duration(99999 * 4)} (e1)" in capsys.readouterr().out  # 99999 s / 10 epochs x 40


def test_bf16_runs_on_a_cpu_without_native_bf16_are_flagged_by_plan_and_stopped_by_run(tmp_path, capsys,
                                                                                        monkeypatch):
    """On a CPU without avx512_bf16/amx_bf16 fit refuses amp bf16 run by run; plan marks those rows and
    leaves them out of the estimate, and run stops with one message before training or writing anything."""
    import importlib

    from sebench import estimate, runner
    from sebench.errors import UserError

    builders = importlib.import_module("sebench.engine.builders")
    spec = ROOT / "experiments" / "cifar10_se_vs_baseline.yaml"
    monkeypatch.setattr(builders, "cpu_bf16_flag", lambda: None)
    monkeypatch.setattr(estimate, "_training_rate", lambda device: 1e12)
    assert main(["plan", str(spec), "--profile", "full40_bf16", "--results", str(tmp_path), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("refused here (amp bf16)") == 10
    assert "10 runs cannot run on this machine: amp 'bf16' on this CPU would be emulated" in out
    assert "estimated time" not in out
    with pytest.raises(UserError, match=r"10 of the 10 runs to do ask for amp 'bf16'.*no avx512_bf16"):
        runner.run_sweep(load_spec(spec), "full40_bf16", tmp_path, device="cpu", progress=False)
    assert not (tmp_path / "runs" / "cifar10_se_vs_baseline").exists() or \
        not any((tmp_path / "runs" / "cifar10_se_vs_baseline").iterdir())
    monkeypatch.setattr(builders, "cpu_bf16_flag", lambda: "avx512_bf16")  # a CPU that has it: nothing refused
    assert main(["plan", str(spec), "--profile", "full40_bf16", "--results", str(tmp_path), "--device", "cpu"]) == 0
    assert "refused" not in capsys.readouterr().out


def test_a_sweep_runs_seed_major_so_a_partial_table_stays_paired(tmp_path):
    from sebench.runner import parse_only, plan

    spec = load_spec(ROOT / "experiments" / "variants_cnn3_cifar10.yaml")
    rows, _ = plan(spec, "paper", tmp_path)
    rows_per_seed = len(spec.sweep[0].values)
    seeds = [r.run.seed for r in rows]
    assert seeds == [s for s in spec.profiles["paper"].seeds for _ in range(rows_per_seed)]
    # within a seed, the table's own row order
    assert [r.run.labels["method"] for r in rows[:rows_per_seed]] == [v.label for v in spec.sweep[0].values]
    only = parse_only(["method=Default", "method=SE module"], spec, "paper")
    assert [(r.run.seed, r.run.labels["method"]) for r in plan(spec, "paper", tmp_path, only=only)[0]][:4] == [
        (0, "Default"), (0, "SE module"), (1, "Default"), (1, "SE module")]


CIFAR100_CPU_SPECS = ["ablation_excitation", "ablation_stages", "ablation_nosqueeze", "ablation_integration",
                      "ablation_reduction", "ablation_squeeze"]


@pytest.mark.parametrize("profile", ["full12", "full40"])
@pytest.mark.parametrize("name", CIFAR100_CPU_SPECS)
def test_cifar100_ablations_reuse_the_main_tables_se_and_plain_runs(name, profile):
    """Issue 35: in _base/cifar100_cpu.yaml's profiles an ablation's standard-SE and no-SE rows are exactly
    cifar100_se_vs_baseline's runs (same recipe_key, so they are adopted, not trained again): the ablation
    base's ImageNet ResNet-50, bias-free FCs and label smoothing must all be reset, and full40 differs from
    full12 in the schedule length only."""
    from sebench.store import recipe_key

    main_runs, _ = expand(load_spec(ROOT / "experiments" / "cifar100_se_vs_baseline.yaml"), profile)
    main_keys = {recipe_key(r) for r in main_runs}
    runs, pending = expand(load_spec(ROOT / "experiments" / f"{name}.yaml"), profile)
    assert not pending and {r.seed for r in runs} == {0, 1, 2}
    assert {(r.model.name, r.data.name, r.optim.label_smoothing) for r in runs} == {("resnet20", "cifar100", 0.0)}
    assert {r.epochs for r in runs} == {12 if profile == "full12" else 40}
    shared = [r for r in runs if recipe_key(r) in main_keys]
    plain = [r for r in shared if r.model.se is None]
    assert len(plain) == 3, "the no-SE row of every seed is the main table's ResNet-20"
    assert len(shared) == 6, "the standard-SE row of every seed (SE_All for stages) is the main table's SE-ResNet-20"


def test_the_40_epoch_cifar100_profile_is_full12_at_40_epochs():
    spec = load_spec(ROOT / "experiments" / "cifar100_se_vs_baseline.yaml")
    short, _ = expand(spec, "full12")
    long, _ = expand(spec, "full40")
    # full12 has a ResNet-56 row too (the depth question); every full40 run repeats a full12 ResNet-20 run
    assert {r.model.name for r in short} == {"resnet20", "resnet56"} and len(short) == 20
    short = [r for r in short if r.model.name == "resnet20"]
    assert len(short) == len(long) == 10
    for a, b in zip(short, long):
        assert (a.seed, a.labels) == (b.seed, b.labels) and (a.epochs, b.epochs) == (12, 40)
        assert a.model_dump(exclude={"epochs", "profile"}) == b.model_dump(exclude={"epochs", "profile"})
