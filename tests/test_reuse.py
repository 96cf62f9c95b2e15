"""A missing run whose recipe another experiment has finished is adopted, not trained again
(runner.reuse_identical, store.adopt_run), and training it anyway gives the very same numbers."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from sebench.runner import run_sweep
from sebench.spec import RunConfig, load_spec
from sebench.store import collect

SPEC = """
title: TITLE
source: {file: 003_a73290d79b60d9ae.txt, table: T}
base:
  model: {name: cnn3}
  data: {name: synthetic, train_subset: 64, test_subset: 32}
  epochs: 1
  batch_size: 32
  eval_batch_size: 32
  benchmark: {batch_size: 4, iters: 1, warmup: 0}
  execution: {device: cpu, threads: 1, progress: false}
seeds: [0]
sweep:
  - axis: AXIS
    values:
      - {label: BASE, baseline: true, set: {model.se: null}}
      - {label: SE, set: {model.se: {reduction: R}}}
profiles:
  smoke: {}
"""

FINAL = ("final_test_top1_err", "final_test_loss", "final_train_loss", "params", "flops")


def write(folder: Path, name: str, axis: str, base: str, reduction: int) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SPEC.replace("TITLE", name).replace("AXIS", axis).replace("BASE", base)
                    .replace("R}", f"{reduction}}}"))
    return path


def summaries(results: Path, experiment: str) -> dict[str, dict]:
    out = {}
    for p in (results / "runs" / experiment).glob("*/summary.json"):
        s = json.loads(p.read_text())
        out[next(iter(s["labels"].values()))] = s
    return out


@pytest.mark.usefixtures("one_thread")
def test_identical_baseline_is_adopted_and_equals_a_retrained_one(tmp_path):
    a = load_spec(write(tmp_path, "tiny_a", "se", "plain", 4))
    b = load_spec(write(tmp_path, "tiny_b", "design", "original", 8))  # same baseline recipe, other SE
    results = tmp_path / "results"
    first = run_sweep(a, "smoke", results, log=lambda s: None)
    assert len(first.finished) == 2 and not first.reused

    lines = []
    second = run_sweep(b, "smoke", results, log=lines.append)
    assert len(second.reused) == 1 and len(second.finished) == 1  # the SE row still trains
    donor, adopted = summaries(results, "tiny_a")["plain"], summaries(results, "tiny_b")["original"]
    assert adopted["reused_from"] == f"tiny_a/{donor['run_id']}"
    assert adopted["experiment"] == "tiny_b" and adopted["labels"] == {"design": "original"}
    assert all(adopted[k] == donor[k] for k in FINAL)
    run = results / "runs" / "tiny_b" / adopted["run_id"]
    raw = yaml.safe_load((run / "config.yaml").read_text())
    assert raw.pop("run_id") == adopted["run_id"] == RunConfig.model_validate(raw).run_id
    assert (run / "metrics.jsonl").read_text() == (results / "runs" / "tiny_a" / donor["run_id"] /
                                                   "metrics.jsonl").read_text()
    assert any(line.startswith("reused ") and "tiny_a/" in line for line in lines)
    assert not (run / ".lock").exists()

    again = run_sweep(b, "smoke", results, log=lambda s: None)  # now simply finished
    assert len(again.skipped) == 2 and not again.reused and not again.finished
    collect(results, "smoke")
    rows = (results / "smoke" / "runs.csv").read_text().splitlines()
    assert "reused_from" in rows[0] and sum(f"tiny_a/{donor['run_id']}" in r for r in rows) == 1

    # Trained anyway (--no-reuse), in a store without the adopted copy: the very same numbers
    shutil.rmtree(results / "runs" / "tiny_b")
    trained = run_sweep(b, "smoke", results, reuse=False, log=lambda s: None)
    assert len(trained.finished) == 2 and not trained.reused
    retrained = summaries(results, "tiny_b")["original"]
    assert "reused_from" not in retrained and retrained["run_id"] == adopted["run_id"]
    assert all(retrained[k] == donor[k] for k in FINAL)


def test_different_recipes_are_never_adopted(tmp_path, one_thread):
    a = load_spec(write(tmp_path, "tiny_a", "se", "plain", 4))
    results = tmp_path / "results"
    run_sweep(a, "smoke", results, log=lambda s: None)
    other = (tmp_path / "tiny_c.yaml")
    other.write_text(write(tmp_path, "tiny_c", "se", "plain", 4).read_text().replace("epochs: 1", "epochs: 2"))
    result = run_sweep(load_spec(other), "smoke", results, log=lambda s: None)
    assert not result.reused and len(result.finished) == 2


def test_plan_shows_what_run_would_adopt(tmp_path, one_thread, capsys):
    from sebench.cli import main

    a = load_spec(write(tmp_path, "tiny_a", "se", "plain", 4))
    b_path = write(tmp_path, "tiny_b", "design", "original", 8)
    results = tmp_path / "results"
    run_sweep(a, "smoke", results, log=lambda s: None)
    donor = summaries(results, "tiny_a")["plain"]["run_id"]
    args = ["plan", str(b_path), "--profile", "smoke", "--results", str(results), "--no-estimate"]

    assert main(args) == 0
    out = capsys.readouterr().out
    line = next(s for s in out.splitlines() if "design=original" in s)
    assert f"reusable: tiny_a/{donor}" in line
    assert "missing" in next(s for s in out.splitlines() if "design=SE" in s)
    assert "2 runs (1 missing, 1 reusable)" in out
    assert not (results / "runs" / "tiny_b").exists()  # plan writes nothing

    assert main(args + ["--no-reuse"]) == 0
    assert "reusable" not in capsys.readouterr().out


@pytest.mark.parametrize("launcher", ["none", "slurm"])
def test_wandb_mirrors_each_run_whose_records_are_final(tmp_path, one_thread, monkeypatch, launcher):
    """`run --wandb` mirrors finished, failed and adopted runs (tracking.LiveMirror.on_end), in this process or
    after a SLURM array (here submitit's in-process debug executor); skipped runs are not mirrored again."""
    pytest.importorskip("submitit")
    from sebench import tracking
    from sebench.cli import main

    a = load_spec(write(tmp_path, "tiny_a", "se", "plain", 4))
    b_path = write(tmp_path, "tiny_b", "design", "original", 8)
    results = tmp_path / "results"
    run_sweep(a, "smoke", results, log=lambda s: None)
    mirrored = []
    monkeypatch.setattr(tracking.runs, "mirror_run", lambda d, **kw: mirrored.append(Path(d)))
    argv = ["run", str(b_path), "--profile", "smoke", "--results", str(results), "--device", "cpu", "--wandb",
            "--no-progress"] + (["--launcher", "slurm", "--cluster", "debug"] if launcher == "slurm" else [])

    assert main(argv) == 0
    runs = summaries(results, "tiny_b")
    assert runs["original"]["reused_from"] and "reused_from" not in runs["SE"]
    assert sorted(mirrored) == sorted(results / "runs" / "tiny_b" / s["run_id"] for s in runs.values())
    mirrored.clear()
    assert main(argv) == 0 and mirrored == []  # both finished before: nothing new to mirror
