"""`sebench run --launcher slurm`: the options, the sbatch script submitit would write, a sweep as a job
array on submitit's local executor, and a preempted task that requeues and resumes bitwise."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from childenv import child_env
from sebench.cli import main
from sebench.engine import fit
from sebench.errors import UserError
from sebench.spec import RunConfig, SlurmCfg, load_spec
from sebench.store import read_jsonl

submitit = pytest.importorskip("submitit")

from sebench import slurm  # noqa: E402  (after the skip: the module itself imports submitit lazily)

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 420

TINY = """
title: slurm test
source: {file: 003_a73290d79b60d9ae.txt, table: T}
base:
  model: {name: cnn3}
  data: {name: synthetic, train_subset: 128, test_subset: 40}
  optim: {lr: 0.05}
  epochs: EPOCHS
  batch_size: 32
  eval_batch_size: 40
  benchmark: {batch_size: 4, iters: 1, warmup: 0}
  execution: {device: cpu, threads: 1, progress: false}
seeds: [0]
slurm: {partition: gpu, account: lab, time: 120, gpus_per_node: 2, cpus_per_task: 6}
profiles:
  smoke: {}
"""


def tiny_spec(folder: Path, epochs: int = 2) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(TINY.replace("EPOCHS", str(epochs)))
    return path


@pytest.fixture
def subprocess_env(monkeypatch):
    """The local executor's job processes inherit this environment: sebench importable, one thread."""
    monkeypatch.setenv("PYTHONPATH", child_env()["PYTHONPATH"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for k in ("SLURM_JOB_ID", "WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)


def test_cli_options_override_the_spec_section(tmp_path):
    spec = load_spec(tiny_spec(tmp_path))
    cfg = slurm.resolve_slurm(spec, {"partition": "preempt", "time": 2880, "nodes": None, "gpus_per_node": 8,
                                     "account": None})
    assert cfg == SlurmCfg(partition="preempt", account="lab", time=2880, gpus_per_node=8, cpus_per_task=6)
    with pytest.raises(UserError, match="--time") as info:
        slurm.resolve_slurm(spec, {"time": 0})
    assert info.value.field == "slurm.time"


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch) -> Path:
    """`srun` and an `sbatch` that keeps the script it is given and answers like SLURM does."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {tmp_path}/submitted.sh\n"
                                    "echo 'Submitted batch job 4242'\n")
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return tmp_path / "submitted.sh"


def test_a_sweep_is_one_job_array_with_the_requested_resources(tmp_path, fake_slurm, capsys):
    spec = tiny_spec(tmp_path)
    spec.write_text(spec.read_text().replace("seeds: [0]", "seeds: [0, 1, 2]"))
    argv = ["run", str(spec), "--profile", "smoke", "--results", str(tmp_path / "results"),
            "--launcher", "slurm", "--partition", "preempt", "--time", "2880", "--gpus-per-node", "8",
            "--nodes", "2"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 to submit" in out and "submitted 3 run(s) as job 4242 (slurm)" in out and "squeue" in out
    text = fake_slurm.read_text()
    for line in ("--array=0-2%3", "--partition=preempt", "--account=lab", "--time=2880", "--nodes=2",
                 "--gpus-per-node=8", "--ntasks-per-node=8", "--cpus-per-task=6", "--job-name=sebench-tiny",
                 "--signal=USR2@"):  # the warning submitit turns into checkpoint + requeue
        assert line in text, line
    # Nothing ran here: the runs are still to do.
    assert not list((tmp_path / "results").glob("runs/tiny/*/summary.json"))
    # A batch that does not split over the processes of a task is refused before submitting.
    fake_slurm.unlink()
    assert main([*argv[:-4], "--gpus-per-node", "3"]) == 2
    assert "do not split evenly over 3 processes" in capsys.readouterr().err and not fake_slurm.exists()


def test_executor_parameters_map_the_slurm_section():
    cfg = SlurmCfg(partition="gpu", account="lab", qos="high", time=60, nodes=1, gpus_per_node=0, mem_gb=32,
                   constraint="a100")
    params = slurm.executor_parameters(cfg, "n")
    assert params == {"name": "n", "timeout_min": 60, "nodes": 1, "tasks_per_node": 1, "gpus_per_node": 0,
                      "slurm_array_parallelism": 64, "mem_gb": 32, "slurm_partition": "gpu",
                      "slurm_account": "lab", "slurm_qos": "high", "slurm_constraint": "a100"}


def test_missing_submitit_or_sbatch_is_one_clear_error(tmp_path, monkeypatch, capsys):
    spec = tiny_spec(tmp_path)
    argv = ["run", str(spec), "--profile", "smoke", "--results", str(tmp_path / "r"), "--launcher", "slurm"]
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs submitit" in err and "pip install 'sebench[slurm]'" in err and err.count("\n") == 1
    monkeypatch.delitem(sys.modules, "submitit")
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "sbatch and srun are not on PATH" in err and "--cluster local" in err


def test_smoke_sweep_as_a_local_job_array(tmp_path, subprocess_env, capsys):
    """A real spec's smoke profile through `sebench run --launcher slurm --cluster local`: one task per
    run, each through the runner's lock and resume; a second submission finds everything finished."""
    results = tmp_path / "results"
    argv = ["run", str(ROOT / "experiments" / "cifar10_se_vs_baseline.yaml"), "--profile", "smoke",
            "--results", str(results), "--device", "cpu", "--set", "execution.threads=1",
            "--launcher", "slurm", "--cluster", "local", "--time", "10", "--gpus-per-node", "0"]
    started = time.time()
    assert main(argv) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "2 to submit" in out and "submitted 2 run(s)" in out and "2 finished now" in out
    assert time.time() - started < 240
    summaries = [json.loads(p.read_text()) for p in results.glob("runs/cifar10_se_vs_baseline/*/summary.json")]
    assert len(summaries) == 2 and {s["status"] for s in summaries} == {"finished"}
    assert {s["model"] for s in summaries} == {"resnet20"} and {s["threads"] for s in summaries} == {1}
    logs = list((results / "slurm" / "cifar10_se_vs_baseline").rglob("*_log.out"))
    assert len(logs) == 2
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 finished, 0 running elsewhere, 0 to submit" in out


def test_preempted_task_requeues_and_resumes_bitwise(tmp_path, subprocess_env):
    """SIGUSR2 (what SLURM sends before preempting or stopping a job) in the middle of training: submitit
    calls RunTask.checkpoint, the task requeues, takes over its own lock and resumes from the last epoch's
    checkpoint; the result equals an uninterrupted run's, bit for bit."""
    spec = load_spec(tiny_spec(tmp_path, epochs=6))
    cfg = SlurmCfg(time=10, gpus_per_node=0)
    sub = slurm.submit_sweep(spec, "smoke", tmp_path / "results", cfg, cluster="local", device="cpu",
                             log=lambda line: None)
    (job,) = sub.jobs
    (rc,) = sub.runs
    run = tmp_path / "results" / "runs" / "tiny" / rc.run_id
    deadline = time.time() + TIMEOUT
    while not (run / "ckpt" / "last.pt").exists():  # epoch 1 checkpointed (renamed into place when complete)
        assert time.time() < deadline and job.state == "RUNNING", job.stderr()
        time.sleep(0.05)
    pid = json.loads((run / ".lock").read_text())["pid"]  # the task process holds the run's lock
    os.kill(pid, signal.SIGUSR2)
    outcome = job.result()
    assert outcome[:2] == (rc.run_id, "finished"), outcome
    log = (job.stdout() or "") + (job.stderr() or "")
    assert "preempted" in log and "Requeued" in log, log
    resumes = json.loads((run / "env.json").read_text()).get("resumes", [])
    assert len(resumes) == 1 and 1 <= resumes[0]["from_epoch"] < 6
    lines = read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in lines] == [1, 2, 3, 4, 5, 6]

    reference = fit(RunConfig.model_validate_json(rc.model_dump_json()), tmp_path / "reference")
    got = json.loads((run / "summary.json").read_text())
    for k in ("final_test_top1_err", "final_test_top5_err", "final_test_loss", "final_train_loss"):
        assert got[k] == getattr(reference, k), k
    assert not (run / ".lock").exists()


def test_requeued_job_takes_over_its_own_lock(tmp_path, monkeypatch):
    """A lock written on another host by this same SLURM job (an attempt that was preempted) is stale for
    the requeued attempt; another job's lock is not."""
    from sebench import runner

    run = tmp_path / "run"
    run.mkdir()
    lock = {"pid": 1, "host": "node-that-was-preempted", "since": 0, "job": "4242_7"}
    (run / ".lock").write_text(json.dumps(lock))
    monkeypatch.setenv("SLURM_JOB_ID", "4243_7")
    assert not runner.acquire_lock(run)  # another job, another host: trusted
    monkeypatch.setenv("SLURM_JOB_ID", "4242_7")
    assert runner.acquire_lock(run)
    assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    runner.release_lock(run)
    assert not (run / ".lock").exists()
