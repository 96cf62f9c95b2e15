"""Nothing is lost: `sebench run` subprocesses killed with SIGKILL mid-epoch and mid-sweep, a torn newest
checkpoint, two runners on one spec at once, and a results folder that cannot be written.

Runs are tiny (the 3-layer CNN with dropout on 128 synthetic images, 3 epochs, one CPU thread each) so
that every check is bitwise against an uninterrupted run. Dropout makes the global RNG part of what a
resume must restore; test_resume_of_an_se_model_with_dropout_is_bitwise adds an SE module, whose
implementation must not draw from that RNG behind the run's back. The fault is injected by a wrapper script (test
code, not the package): it patches ArrayLoader.__iter__ so that at (run, epoch, batch) the process either
SIGKILLs itself or pauses so that this test can SIGKILL it from outside.

The torn checkpoint inside fit is covered by tests/test_engine_fit.py::
test_kill_before_checkpoint_and_torn_last_pt_fall_back_to_prev; here the same fault goes through the CLI.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from childenv import child_env
from sebench.store import read_jsonl

PY = sys.executable
TIMEOUT = 420  # generous: a loaded 2-core machine

SPEC = """
title: fault tests
source: {file: 003_a73290d79b60d9ae.txt, table: T}
base:
  model: {name: cnn3}
  data: {name: synthetic, train_subset: 128, test_subset: 40}
  optim: {lr: 0.05}
  epochs: 3
  batch_size: 32
  eval_batch_size: 40
  benchmark: {batch_size: 4, iters: 1, warmup: 0}
  execution: {device: cpu, threads: 1, progress: false}
seeds: SEEDS
sweep:
  - axis: se
    values:
      - {label: LABEL, baseline: true, set: {model.se: SE}}
profiles:
  smoke: {}
"""

# Runs `sebench` with a fault at (run number, epoch, batch) of the training loop: SB_FAULT is
# "die:RUN:EPOCH:BATCH" (SIGKILL itself) or "pause:RUN:EPOCH:BATCH:MARKER" (write MARKER, then wait to be
# killed from outside). Run numbers count runs started from epoch 1 in this process.
WRAPPER = textwrap.dedent("""
    import os, signal, sys, time
    import sebench.data.loader as loader
    from sebench.cli import main

    mode, run, epoch, batch, *rest = os.environ["SB_FAULT"].split(":")
    run, epoch, batch = int(run), int(epoch), int(batch)
    started = [0]
    original = loader.ArrayLoader.__iter__

    def faulty(self):
        if self.train and self.epoch == 1:
            started[0] += 1
        for i, item in enumerate(original(self)):
            if self.train and (started[0], self.epoch, i) == (run, epoch, batch):
                if mode == "die":
                    os.kill(os.getpid(), signal.SIGKILL)
                open(rest[0], "w").close()
                time.sleep(600)
            yield item

    loader.ArrayLoader.__iter__ = faulty
    sys.exit(main(sys.argv[1:]))
""")

FINAL = ("final_test_top1_err", "final_test_top5_err", "final_test_loss", "final_train_loss")
CURVE = ("epoch", "train_loss", "train_top1_err", "test_loss", "test_top1_err", "test_top5_err", "lr")


def env(**extra) -> dict:
    return child_env(OMP_NUM_THREADS="1", **extra)


def write_spec(folder: Path, seeds: list[int], se: bool = False) -> Path:
    """tiny.yaml (the experiment is named after the file, so every folder's runs share run ids)."""
    folder.mkdir(parents=True, exist_ok=True)
    text = SPEC.replace("SEEDS", json.dumps(seeds)).replace("LABEL", "SE" if se else "plain")
    (folder / "tiny.yaml").write_text(text.replace("SE}}", "{reduction: 4}}}" if se else "null}}"))
    (folder / "wrapper.py").write_text(WRAPPER)
    return folder


def run_cli(folder: Path, results: str, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    argv = [PY, "wrapper.py"] if fault else [PY, "-m", "sebench"]
    return subprocess.run([*argv, "run", "tiny.yaml", "--profile", "smoke", "--results", results, "--device",
                           "cpu", *extra],
                          cwd=folder, env=env(**({"SB_FAULT": fault} if fault else {})), capture_output=True,
                          text=True, timeout=TIMEOUT)


def start_paused(folder: Path, results: str, run: int, epoch: int, batch: int) -> subprocess.Popen:
    """A sweep that stops at (run, epoch, batch); returns once it is there."""
    marker = folder / f"paused-{results}"
    err = folder / f"paused-{results}.err"  # a file, not a pipe: an unread pipe can fill and stall the sweep
    with open(err, "w") as stderr:
        proc = subprocess.Popen([PY, "wrapper.py", "run", "tiny.yaml", "--profile", "smoke", "--results",
                                 results, "--device", "cpu"],
                                cwd=folder, env=env(SB_FAULT=f"pause:{run}:{epoch}:{batch}:{marker}"),
                                stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.time() + TIMEOUT
    while not marker.exists():
        assert proc.poll() is None, err.read_text()
        assert time.time() < deadline, "the sweep never reached the fault point"
        time.sleep(0.05)
    return proc


def runs(results: Path) -> dict[str, Path]:
    return {d.name: d for d in (results / "runs" / "tiny").iterdir() if d.is_dir()}


def summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def curve(run: Path) -> list[list]:
    return [[r[k] for k in CURVE] for r in read_jsonl(run / "metrics.jsonl")]


def assert_same_as(run: Path, ref: Path) -> None:
    assert {k: summary(run)[k] for k in FINAL} == {k: summary(ref)[k] for k in FINAL}  # bitwise
    assert curve(run) == curve(ref)  # every epoch once, equal


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted runs of seeds 0, 1, 2: {run_id: run dir}."""
    folder = write_spec(tmp_path_factory.mktemp("reference"), [0, 1, 2])
    proc = run_cli(folder, "results")
    assert proc.returncode == 0, proc.stderr
    return runs(folder / "results")


def test_sigkill_mid_epoch_then_rerun_is_bitwise_equal(reference, tmp_path):
    folder = write_spec(tmp_path, [0])
    killed = run_cli(folder, "results", fault="die:1:2:2")  # run 1, epoch 2, after its 2nd batch
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (run,) = runs(folder / "results").values()
    assert not (run / "summary.json").exists() and len(read_jsonl(run / "metrics.jsonl")) == 1
    assert (run / ".lock").exists()  # left by the dead process: taken over below
    again = run_cli(folder, "results")
    assert again.returncode == 0, again.stderr
    assert_same_as(run, reference[run.name])
    assert [r["from_epoch"] for r in json.loads((run / "env.json").read_text())["resumes"]] == [1]
    assert not (run / ".lock").exists() and not list(run.rglob("*.tmp"))


def test_resume_of_an_se_model_with_dropout_is_bitwise(tmp_path):
    """The same kill and rerun with SE in the network (the library's default SE implementation), against
    an uninterrupted run in a fresh process: nothing in the SE code may consume the global RNG lazily
    (a draw made on the first backward of a process shifts the dropout masks of a resumed run)."""
    ref = write_spec(tmp_path / "reference", [0], se=True)
    assert run_cli(ref, "results").returncode == 0
    folder = write_spec(tmp_path / "killed", [0], se=True)
    assert run_cli(folder, "results", fault="die:1:2:2").returncode == -signal.SIGKILL
    again = run_cli(folder, "results")
    assert again.returncode == 0, again.stderr
    (run,) = runs(folder / "results").values()
    assert_same_as(run, runs(ref / "results")[run.name])


def test_torn_newest_checkpoint_falls_back_to_the_previous_one(reference, tmp_path):
    """Killed in epoch 3 (last.pt: epoch 2, prev.pt: epoch 1), then last.pt torn in half: the rerun warns,
    resumes from prev.pt and still ends bitwise equal."""
    folder = write_spec(tmp_path, [0])
    assert run_cli(folder, "results", fault="die:1:3:1").returncode == -signal.SIGKILL
    (run,) = runs(folder / "results").values()
    last = run / "ckpt" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    again = run_cli(folder, "results")
    assert again.returncode == 0, again.stderr
    assert "last.pt is unreadable" in again.stderr and "prev.pt (epoch 1)" in again.stderr
    assert_same_as(run, reference[run.name])
    assert [r["from_epoch"] for r in json.loads((run / "env.json").read_text())["resumes"]] == [1]


def test_killed_sweep_resumes_skips_finished_runs_and_collects_each_run_once(reference, tmp_path):
    folder = write_spec(tmp_path, [0, 1, 2])
    proc = start_paused(folder, "results", run=2, epoch=2, batch=1)
    proc.kill()  # SIGKILL from outside, in the middle of run 2's second epoch
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    found = runs(folder / "results")
    done = [d for d in found.values() if (d / "summary.json").exists()]
    partial = [d for d in found.values() if not (d / "summary.json").exists()]
    assert len(done) == 1 and len(partial) == 1  # run 3 was never started
    first, second = done[0], partial[0]
    first_log = first / "metrics.jsonl"
    stamp = (first_log.stat().st_mtime_ns, (first / "summary.json").stat().st_mtime_ns)

    again = run_cli(folder, "results")
    assert again.returncode == 0, again.stderr
    assert "3 runs: 1 finished, 0 running elsewhere, 2 to run" in again.stdout
    assert "(partial)" in again.stdout and "2 finished now, 1 already finished" in again.stdout
    # The finished run was not touched; the killed one resumed after its epoch 1; all equal the reference.
    assert (first_log.stat().st_mtime_ns, (first / "summary.json").stat().st_mtime_ns) == stamp
    assert len(read_jsonl(first_log)) == 3
    assert [r["from_epoch"] for r in json.loads((second / "env.json").read_text())["resumes"]] == [1]
    assert set(runs(folder / "results")) == set(reference)
    for run_id, run in runs(folder / "results").items():
        assert_same_as(run, reference[run_id])

    collected = subprocess.run([PY, "-m", "sebench", "collect", "--results", "results"], cwd=folder, env=env(),
                               capture_output=True, text=True, timeout=TIMEOUT)
    assert collected.returncode == 0, collected.stderr
    with open(folder / "results" / "smoke" / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run_id"] for r in rows) == sorted(reference)  # every run, none twice
    assert {r["status"] for r in rows} == {"finished"}


def test_two_runners_on_one_spec_execute_every_run_exactly_once(reference, tmp_path):
    folder = write_spec(tmp_path, [0, 1, 2])
    argv = [PY, "-m", "sebench", "run", "tiny.yaml", "--profile", "smoke", "--results", "results", "--device", "cpu"]
    procs = [subprocess.Popen(argv, cwd=folder, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    found = runs(folder / "results")
    assert set(found) == set(reference)
    for run_id, run in found.items():
        log = (run / "metrics.jsonl").read_text()
        assert log.count('"epoch": 1,') == 1 and len(read_jsonl(run / "metrics.jsonl")) == 3  # trained once
        assert "resumes" not in json.loads((run / "env.json").read_text())  # never started twice
        assert summary(run)["status"] == "finished"
        assert_same_as(run, reference[run_id])  # and no record mixed from two writers
        assert not (run / ".lock").exists() and not list(run.rglob("*.tmp"))


@pytest.fixture(params=["file", "read-only"])
def unwritable(request, tmp_path) -> Path:
    """A results path that cannot hold a run: a regular file where the folder should be, or a folder
    without write permission (which does not stop root, so that case is skipped for root)."""
    results = tmp_path / "results"
    if request.param == "file":
        results.write_text("not a folder")
        return results
    if os.geteuid() == 0:
        pytest.skip("running as root: permissions do not stop writes (the 'file' case covers this)")
    results.mkdir()
    results.chmod(0o500)
    request.addfinalizer(lambda: results.chmod(0o700))
    return results


def test_unwritable_results_folder_is_one_clear_error(unwritable, tmp_path):
    folder = write_spec(tmp_path / "spec", [0])
    proc = subprocess.run([PY, "-m", "sebench", "run", "tiny.yaml", "--profile", "smoke", "--results",
                           str(unwritable)], cwd=folder, env=env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "cannot write to the results folder" in proc.stderr and str(unwritable) in proc.stderr
    assert "--results" in proc.stderr  # says what to do


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux-only")
def test_killed_parallel_sweep_leaves_no_worker_training(tmp_path):
    """`run --jobs 2` killed with SIGKILL: its workers stop too (they would otherwise go on writing runs that
    the next `run` wants to resume)."""
    folder = write_spec(tmp_path / "w", [0, 1])
    proc = subprocess.Popen([PY, "-m", "sebench", "run", "tiny.yaml", "--profile", "smoke", "--results", "res",
                             "--device", "cpu", "--jobs", "2", "--set", "epochs=500"],
                            cwd=folder, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + TIMEOUT
    while not list((folder / "res").glob("runs/tiny/*/metrics.jsonl")):  # a worker is training
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    workers = [c for c in _children(proc.pid)
               if "spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes().decode(errors="replace")]
    assert workers
    proc.kill()
    proc.wait()
    deadline = time.time() + 30
    while any(Path(f"/proc/{w}").exists() and "Z" not in Path(f"/proc/{w}/stat").read_text().rsplit(")", 1)[1][:3]
              for w in workers):
        assert time.time() < deadline, "a worker outlived the killed runner"
        time.sleep(0.2)
