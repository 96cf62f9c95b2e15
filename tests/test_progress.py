"""Live progress (sebench.progress): the plain-line form a log gets, a sweep read from its run directories,
and a real 2-job sweep whose log shows both workers, survives one of them being killed, and still ends by
saying where its runs are."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

from childenv import child_env
from sebench.progress import Board, SweepProgress
from sebench.store import append_jsonl, read_jsonl, write_progress

TIMEOUT = 420  # a loaded 2-core machine

SPEC = """
title: progress tests
source: {file: 003_a73290d79b60d9ae.txt, table: T}
base:
  model: {name: cnn3}
  data: {name: synthetic, train_subset: 512, test_subset: 64}
  optim: {lr: 0.05}
  epochs: 4
  batch_size: 32
  eval_batch_size: 64
  benchmark: {batch_size: 4, iters: 1, warmup: 0}
  execution: {device: cpu, threads: 1}
seeds: [0, 1, 2]
profiles:
  smoke: {}
"""


def _record(epoch: int, **extra) -> dict:
    return {"epoch": epoch, "train_loss": 1.5, "test_top1_err": 40.0 - epoch, "train_img_s": 250.0,
            "epoch_s": 10.0, "time": time.time(), **extra}


def test_board_in_a_log_prints_snapshots_and_events():
    out = io.StringIO()
    board = Board("job", 4, unit="runs", slots=2, stream=out, terminal=False, interval=0)
    board.slot(1, "run b", 0.5, "epoch 2/4")
    board.update(1, status="1 running")
    board.print("an event")
    board.close()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("job: 1/4 runs | 1 running")
    assert lines[1] == "  [2] run b: 50% | epoch 2/4" and lines[2] == "an event"
    quiet = io.StringIO()
    Board("job", 4, stream=quiet, terminal=False, interval=3600).update(2)  # not due yet
    Board("job", 4, stream=quiet, terminal=False, interval=0, enabled=False).update(3)
    assert quiet.getvalue() == ""


def test_sweep_progress_reads_epochs_and_heartbeats(tmp_path):
    """Epoch lines from metrics.jsonl, the position within an epoch from the heartbeat, an ETA from
    measured epoch times; a resumed run's older epochs are not announced again."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    append_jsonl(b / "metrics.jsonl", _record(1, time=time.time() - 100))  # from an earlier attempt
    out = io.StringIO()
    watch = SweepProgress("sweep", [("a", "run a", 4, a), ("b", "run b", 4, b), ("c", "run c", 4, tmp_path)],
                          jobs=2, stream=out, terminal=False, interval=0)
    watch.started("a", 0)
    watch.started("b", 1)
    assert watch.eta() == (10 * 3 + 10 * 4 + 10 * 4) / 2  # b's pace, queued c at the mean, split over 2 jobs
    append_jsonl(a / "metrics.jsonl", _record(1))
    write_progress(a, {"epoch": 2, "epochs": 4, "step": 8, "steps": 16, "img_s": 300.0, "elapsed": 5.0,
                       "time": time.time()})
    watch.poll()
    watch.ended("b", "failed")
    text = out.getvalue()
    assert "a  epoch 1/4: train loss 1.5000, test top-1 err 39.00%, 250 img/s, 10.0 s" in text
    assert "b  epoch 1/4" not in text  # trained before this sweep started it
    assert "[1] run a: 38% | epoch 2/4 50%, test err 39.00%, 300 img/s" in text
    assert "sweep: 1/3 runs | 1 running, 1 left, 1 failed, ETA" in text.splitlines()[-2]


def test_a_run_restarted_without_its_checkpoint_hides_the_earlier_attempts_epochs(tmp_path):
    """A run folder whose checkpoint is gone (a fresh machine) still holds the old attempt's epoch log
    until the fit rewrites it: the board must say epoch 1 starting, not the old attempt's epoch and error."""
    a = tmp_path / "a"
    for epoch in (1, 2, 3):
        append_jsonl(a / "metrics.jsonl", _record(epoch, time=time.time() - 100))
    out = io.StringIO()
    watch = SweepProgress("sweep", [("a", "run a", 4, a)], jobs=1, stream=out, terminal=False, interval=0)
    watch.started("a", 0, fresh=True)
    watch.poll()
    assert "[1] run a: 0% | epoch 1/4 starting" in out.getvalue()
    assert "test err" not in out.getvalue()
    resumed = SweepProgress("sweep", [("a", "run a", 4, a)], jobs=1, stream=io.StringIO(), terminal=False,
                            interval=0)
    resumed.started("a", 0)  # with a checkpoint the old epochs are this run's own
    assert resumed.eta() == 10.0


def _env() -> dict:
    return child_env(OMP_NUM_THREADS="1", SEBENCH_PROGRESS_INTERVAL="0.5")


def test_two_job_sweep_log_survives_a_killed_worker(tmp_path):
    (tmp_path / "tiny.yaml").write_text(SPEC)
    argv = [sys.executable, "-m", "sebench", "run", "tiny.yaml", "--profile", "smoke", "--results", "res",
            "--device", "cpu", "--jobs", "2"]
    log = tmp_path / "sweep.log"
    with open(log, "w") as f:  # a file: not a terminal, so plain lines
        proc = subprocess.Popen(argv, cwd=tmp_path, env=_env(), stdout=f, stderr=subprocess.STDOUT)
        runs = tmp_path / "res" / "runs" / "tiny"
        deadline = time.time() + TIMEOUT
        victim = None
        while victim is None:  # the first run to finish an epoch: kill its worker mid-run
            assert proc.poll() is None and time.time() < deadline, log.read_text()
            for d in sorted(runs.glob("*")):
                if read_jsonl(d / "metrics.jsonl") and (d / ".lock").exists():
                    victim = d
                    break
            time.sleep(0.05)
        before = read_jsonl(victim / "metrics.jsonl")
        os.kill(json.loads((victim / ".lock").read_text())["pid"], signal.SIGKILL)
        assert proc.wait(timeout=TIMEOUT) == 1  # a failed run fails the command; the others went on
    text = log.read_text()
    ids = sorted(d.name for d in runs.iterdir())
    assert len(ids) == 3
    # Both workers' runs in the periodic lines, with the sweep's counts.
    snapshot = [line for line in text.splitlines() if line.startswith("  [")]
    assert {line[2:5] for line in snapshot} == {"[1]", "[2]"}
    assert all(any(rid in line and "epoch" in line for line in snapshot) for rid in ids), text
    assert "tiny [smoke]: 0/3 runs | 2 running, 1 left, 0 failed, ETA" in text
    assert f"{victim.name}  epoch 1/4: train loss" in text
    assert f"failed   {victim.name}" in text and "worker died" in text
    # The slot of the dead worker got a fresh one: every other run finished.
    assert sum(f"finished {rid}" in text for rid in ids) == 2
    assert text.rstrip().endswith("runs: res/runs/tiny")
    assert "FAILED " + victim.name in text
    # Nothing lost: the next sweep resumes the killed run after the epochs it had written.
    again = subprocess.run(argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"{victim.name}  (base) seed" in again.stdout and "(partial)" in again.stdout
    after = read_jsonl(victim / "metrics.jsonl")
    assert after[:len(before)] == before and [r["epoch"] for r in after] == [1, 2, 3, 4]
    assert not (victim / ".progress.json").exists()
