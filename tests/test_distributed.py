"""Data-parallel training (torch.distributed, gloo on CPU) and the launchers' plumbing.

The end-to-end tests start 2 CPU processes. The model is the 3-layer CNN with SE and dropout 0: no
BatchNorm (whose per-rank batch statistics differ from the global batch's unless SyncBatchNorm is on,
and PyTorch's SyncBatchNorm has no CPU kernel) and no random masks (whose streams are per rank), so a
2-process run computes the single-process run's steps; only the order of floating-point sums differs
(DDP averages two half-batch gradients). Measured on this suite's CPU runner: losses agree to ~3e-7
relative, parameters to ~7e-6 absolute after 2 epochs. The tolerances below are 1e-5 relative (losses)
and 5e-5 absolute (parameters); error rates must be equal (top-1 and top-5 counts are exact sums).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from childenv import child_env
from sebench.cli import build_parser
from sebench.data import ArrayLoader, build_loaders
from sebench.engine import distributed
from sebench.engine.distributed import World
from sebench.errors import UserError
from sebench.launch import FORWARDED, NOT_FORWARDED, forwarded_args, torchrun_argv
from sebench.spec import DataCfg
from sebench.store import read_jsonl

PY = sys.executable
TIMEOUT = 420  # generous: a loaded 2-core machine starts torch slowly

SPEC = """
title: tiny data-parallel check
source: {file: 003_a73290d79b60d9ae.txt, table: T}
base:
  model: {name: cnn3, kwargs: {dropout: 0.0}, se: {reduction: 4}}
  data: {name: synthetic, train_subset: 128, test_subset: 60, augment: crop_flip}
  optim: {lr: 0.05}
  epochs: 2
  batch_size: 32
  eval_batch_size: 25
  benchmark: {batch_size: 8, iters: 1, warmup: 0}
  execution: {device: cpu, threads: 1, progress: false}
seeds: [0]
sweep:
  - axis: se
    values:
      - {label: SE, baseline: true}
profiles:
  smoke: {}
"""


def env() -> dict:
    e = child_env(OMP_NUM_THREADS="1")
    for k in distributed.ENV_VARS + ("MASTER_ADDR", "MASTER_PORT"):
        e.pop(k, None)
    return e


def sebench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([PY, "-m", "sebench", *args], cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=TIMEOUT)
    return proc


def only_run(results: Path) -> Path:
    (run,) = (results / "runs" / "tiny").iterdir()
    return run


# ---- the loader's shards ----------------------------------------------------------------------------------

def images(n: int) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))


def make(x, rank=0, world=1, **kw) -> ArrayLoader:
    args = dict(batch_size=8, train=True, device="cpu", seed=5, mean=(0.5,) * 3, std=(0.25,) * 3,
                augment="crop_flip", rank=rank, world_size=world, min_last=2)
    args.update(kw)
    ld = ArrayLoader(x, torch.arange(len(x)), **args)
    ld.set_epoch(3)
    return ld


@pytest.mark.parametrize("n, world", [(40, 2), (44, 4), (45, 2), (41, 2)])
def test_rank_shards_of_every_batch_make_the_single_process_batch(n, world):
    x = images(n)
    single = list(make(x))
    shards = [list(make(x, r, world)) for r in range(world)]
    assert all(len(s) == len(make(x, r, world)) for r, s in enumerate(shards))
    assert len({len(s) for s in shards}) == 1  # every rank takes the same number of steps
    for step, (xb, yb) in enumerate(single):
        parts = [shards[r][step] for r in range(world)] if step < len(shards[0]) else []
        if not parts:
            continue
        got_x, got_y = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        assert len({len(p[1]) for p in parts}) == 1  # equal shares, so DDP's mean of means is exact
        # The same images with the same crops and flips, bit for bit (a last batch may be cut).
        assert torch.equal(got_y, yb[:len(got_y)]) and torch.equal(got_x, xb[:len(got_y)])
        assert len(yb) - len(got_y) < world
    if n % 8 == 0:
        assert len(shards[0]) == len(single)


def test_evaluation_shards_cover_the_test_set_once():
    x = images(23)
    full_x, full_y = map(torch.cat, zip(*make(x, train=False, batch_size=10)))
    parts = [list(make(x, r, 3, train=False, batch_size=10)) for r in range(3)]
    got_y = torch.cat([yb for shard in parts for _, yb in shard])
    assert sorted(got_y.tolist()) == full_y.tolist()
    got_x = {int(y): xb for shard in parts for xbs, ybs in shard for xb, y in zip(xbs, ybs)}
    assert all(torch.equal(got_x[int(y)], full_x[i]) for i, y in enumerate(full_y))


def test_global_batch_must_split_over_the_processes():
    with pytest.raises(UserError, match="does not split evenly over 3 processes") as info:
        build_loaders(DataCfg(name="synthetic", train_subset=64, test_subset=20), batch_size=32,
                      eval_batch_size=20, device="cpu", seed=0, rank=0, world_size=3)
    assert info.value.field == "batch_size"


# ---- launcher environment and argv ---------------------------------------------------------------------------

def test_world_from_launcher_environment(monkeypatch):
    for k in distributed.ENV_VARS:
        monkeypatch.delenv(k, raising=False)
    assert distributed.launched_world() is None and distributed.current() == World()
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    world = distributed.launched_world()
    assert world == World(rank=5, size=8, local_rank=1, local_size=4)
    assert world.distributed and not world.is_main
    monkeypatch.setenv("RANK", "8")
    with pytest.raises(UserError, match="inconsistent launcher environment"):
        distributed.launched_world()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(UserError, match="RANK='x' is not an integer"):
        distributed.launched_world()
    assert distributed.backend_for("cpu") == "gloo" and distributed.backend_for("cuda") == "nccl"


def test_torchrun_argv_is_a_list_that_forwards_every_run_option():
    parser = build_parser()
    args = parser.parse_args(["run", "my spec; rm -rf ~", "--profile", "smoke", "--results", "/r $HOME",
                              "--set", "epochs=2", "--set", "optim.lr=`id`", "--device", "cpu",
                              "--no-progress", "--sync-bn", "--launcher", "torchrun", "--nproc", "2"])
    argv = torchrun_argv(args, 2, python="/py")
    assert argv[:7] == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]
    assert argv[7:9] == ["sebench", "run"] and argv[-2:] == ["--launcher", "none"]
    # Values pass as single argv items, untouched (no shell ever sees them).
    assert "my spec; rm -rf ~" in argv and "/r $HOME" in argv and "optim.lr=`id`" in argv
    assert argv.count("--set") == 2 and "--sync-bn" in argv and "--nproc" not in argv
    # Every option of `run` is either forwarded to the ranks or deliberately kept by the launcher.
    run_parser = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" run"))
    dests = {a.dest for a in run_parser._actions if a.dest != "help"}
    assert dests <= {attr for attr, _, _ in FORWARDED} | NOT_FORWARDED, dests - NOT_FORWARDED
    assert forwarded_args(args)[0] == "my spec; rm -rf ~"


def test_nproc_without_torchrun_and_jobs_with_torchrun_are_user_errors(tmp_path, capsys):
    from sebench.cli import main

    spec = tmp_path / "tiny.yaml"
    spec.write_text(SPEC)
    assert main(["run", str(spec), "--profile", "smoke", "--results", str(tmp_path / "r"), "--nproc", "2"]) == 2
    assert "--nproc needs --launcher torchrun" in capsys.readouterr().err
    assert main(["run", str(spec), "--profile", "smoke", "--results", str(tmp_path / "r"), "--jobs", "2",
                 "--launcher", "torchrun", "--nproc", "2"]) == 2
    assert "--jobs and --launcher torchrun do not combine" in capsys.readouterr().err
    # Checked before any process starts: one line instead of three failed ranks.
    assert main(["run", str(spec), "--profile", "smoke", "--results", str(tmp_path / "r"), "--device", "cpu",
                 "--launcher", "torchrun", "--nproc", "3"]) == 2
    err = capsys.readouterr().err
    assert "batch size(s) [32] do not split evenly over 3 processes" in err and err.count("\n") == 1
    assert main(["run", str(spec), "--profile", "smoke", "--results", str(tmp_path / "r"), "--device", "cpu",
                 "--launcher", "torchrun", "--nproc", "2", "--sync-bn"]) == 2
    assert "SyncBatchNorm needs CUDA" in capsys.readouterr().err


# ---- several GPUs on one machine: --jobs ------------------------------------------------------------------------

def test_each_job_gets_its_own_gpu(monkeypatch):
    from sebench import runner

    assert runner.assign_gpus(4, ["0", "1", "2", "3"]) == ["0", "1", "2", "3"]
    assert runner.assign_gpus(2, ["3", "5", "7"]) == ["3", "5"]  # unused GPUs stay free
    assert runner.assign_gpus(3, []) == [None, None, None]
    with pytest.warns(RuntimeWarning, match="1 worker\\(s\\) share a GPU"):
        assert runner.assign_gpus(3, ["0", "1"]) == ["0", "1", "0"]
    # What is visible: CUDA_VISIBLE_DEVICES entries (ids or UUIDs), as many as torch counts.
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,GPU-6f1c")
    assert runner.visible_gpus() == ["4", "GPU-6f1c"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert runner.visible_gpus() == ["0", "1"]


def test_job_workers_see_exactly_their_gpu():
    """The real worker pools with a fake GPU list: each worker process's CUDA_VISIBLE_DEVICES."""
    from sebench import runner

    pools = runner.make_pools(2, ["5", "7"])
    try:
        seen = [p.submit(os.getenv, "CUDA_VISIBLE_DEVICES").result(timeout=TIMEOUT) for p in pools]
    finally:
        for p in pools:
            p.shutdown()
    assert seen == ["5", "7"]


def test_run_sweep_hands_the_gpu_list_to_the_pools(monkeypatch, tmp_path):
    """--jobs 2 with two (fake) GPUs: run_sweep asks for one pool per GPU, and splits the CPU threads over the
    cores this process may use (its affinity mask, here 6 of a machine's 64), not the machine's."""
    from sebench import runner
    from sebench.spec import load_spec

    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(SPEC.replace("seeds: [0]", "seeds: [0, 1]"))
    asked, threads = [], []

    class FakePool:
        def __init__(self, gpu):
            self.gpu = gpu

        def submit(self, fn, rc, directory):
            from concurrent.futures import Future
            threads.append(rc.execution.threads)
            f = Future()
            f.set_result((rc.run_id, "finished", f"on GPU {self.gpu}"))
            return f

        def shutdown(self, **kw):
            pass

    monkeypatch.setattr(runner.sweep, "visible_gpus", lambda: ["0", "1"])
    monkeypatch.setattr(runner.sweep, "available_cpus", lambda: 6)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(runner.pool, "make_pools", lambda jobs, gpus: asked.append((jobs, gpus)) or
                        [FakePool(g) for g in runner.assign_gpus(jobs, gpus)])
    lines = []
    result = runner.run_sweep(load_spec(spec_path), "smoke", tmp_path / "r", jobs=2, device="auto", log=lines.append)
    assert asked == [(2, ["0", "1"])] and len(result.finished) == 2
    assert threads == [3, 3]
    assert {line.split("on GPU ")[1][0] for line in lines if "on GPU" in line} == {"0", "1"}


# ---- end to end: torchrun with 2 CPU processes -----------------------------------------------------------------

@pytest.fixture(scope="module")
def single_and_ddp(tmp_path_factory):
    """The same spec run by one process and by `--launcher torchrun --nproc 2` (gloo)."""
    base = tmp_path_factory.mktemp("ddp")
    (base / "tiny.yaml").write_text(SPEC)
    one = sebench("run", "tiny.yaml", "--profile", "smoke", "--results", "single", "--device", "cpu", cwd=base)
    assert one.returncode == 0, one.stderr
    two = sebench("run", "tiny.yaml", "--profile", "smoke", "--results", "ddp", "--device", "cpu",
                  "--launcher", "torchrun", "--nproc", "2", cwd=base)
    assert two.returncode == 0, two.stdout + two.stderr
    return base, only_run(base / "single"), only_run(base / "ddp"), two


def test_two_processes_match_one_process(single_and_ddp):
    _, one, two, proc = single_and_ddp
    assert one.name == two.name  # execution (and the launcher) is not part of a run's identity
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert s1["world_size"] == 1 and s2["world_size"] == 2
    for k in ("final_test_top1_err", "final_test_top5_err"):
        assert s1[k] == s2[k]
    for k in ("final_test_loss", "final_train_loss"):
        assert s2[k] == pytest.approx(s1[k], rel=1e-5)
    m1, m2 = read_jsonl(one / "metrics.jsonl"), read_jsonl(two / "metrics.jsonl")
    assert [r["epoch"] for r in m2] == [1, 2]  # rank 0 alone writes: no line twice
    for a, b in zip(m1, m2):
        assert a["train_top1_err"] == b["train_top1_err"] and a["test_top1_err"] == b["test_top1_err"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-5)
    c1, c2 = (torch.load(d / "ckpt" / "last.pt", weights_only=True) for d in (one, two))
    assert c1["model"].keys() == c2["model"].keys()
    diff = max((c1["model"][k].double() - c2["model"][k].double()).abs().max().item() for k in c1["model"])
    rel = {k: abs(s2[k] - s1[k]) / abs(s1[k]) for k in ("final_test_loss", "final_train_loss")}
    print(f"\n2 processes vs 1: loss relative differences {rel}, largest parameter difference {diff:.2e}")
    assert diff < 5e-5, diff
    assert len(c2["rng_ranks"]) == 2 and "rng_ranks" not in c1
    env_two = json.loads((two / "env.json").read_text())
    assert env_two["world_size"] == 2 and env_two["distributed"]["backend"] == "gloo"
    assert env_two["threads"] == 1
    # One report, from rank 0.
    assert proc.stdout.count("finished now") == 1


def test_a_data_parallel_run_is_finished_for_any_launcher(single_and_ddp):
    base, _, two, _ = single_and_ddp
    before = (two / "metrics.jsonl").stat().st_mtime_ns
    again = sebench("run", "tiny.yaml", "--profile", "smoke", "--results", "ddp", "--device", "cpu", cwd=base)
    assert again.returncode == 0, again.stderr
    assert "1 already finished" in again.stdout and (two / "metrics.jsonl").stat().st_mtime_ns == before


# A rank of a data-parallel run started by hand (the env:// variables torchrun would set), with an
# optional hook: rank 0 SIGKILLs itself right after writing the checkpoint of epoch `kill_at`.
RANK_CHILD = textwrap.dedent("""
    import os, signal, sys
    import sebench.engine.checkpoint as checkpoint
    from sebench.engine import distributed, fit
    from sebench.spec import RunConfig

    cfg = RunConfig.model_validate_json(open(sys.argv[1]).read())
    run_dir, kill_at = sys.argv[2], int(sys.argv[3])
    save = checkpoint.save_checkpoint

    def save_then_maybe_die(ckpt_dir, state):
        path = save(ckpt_dir, state)
        if state["epoch"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return path

    checkpoint.save_checkpoint = save_then_maybe_die
    with distributed.process_group("cpu"):  # the teardown torchrun's ranks use
        fit(cfg, run_dir)
""")


def run_ranks(cfg_json: Path, run: Path, port: int, kill_at: int = 0) -> list[int]:
    script = run.parent / "rank_child.py"
    script.write_text(RANK_CHILD)
    procs = []
    for rank in range(2):
        e = {**env(), "WORLD_SIZE": "2", "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": "2",
             "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        # stderr to a file: a pipe nobody reads can fill and stall a rank, and a failure must show it
        with open(run.parent / f"rank{rank}.err", "w") as err:
            procs.append(subprocess.Popen([PY, str(script), str(cfg_json), str(run), str(kill_at)], env=e,
                                          stdout=subprocess.DEVNULL, stderr=err, text=True))
    deadline = time.time() + TIMEOUT
    codes = [None, None]
    while None in codes and time.time() < deadline:
        codes = [p.poll() for p in procs]
        if codes[0] == -signal.SIGKILL and codes[1] is None:  # rank 0's machine "died": so does rank 1
            procs[1].kill()
        time.sleep(0.1)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    return [p.returncode for p in procs]


def rank_errors(where: Path) -> str:
    """The end of each rank's stderr, for an assertion message."""
    return "\n".join(f"rank {r}: ...{(where / f'rank{r}.err').read_text()[-2000:]}" for r in range(2))


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_data_parallel_run_killed_and_resumed_is_bitwise_equal(single_and_ddp, tmp_path):
    """Two ranks, rank 0 SIGKILLed after epoch 1's checkpoint (and rank 1 with it), then both started
    again: the same numbers, bit for bit, as the uninterrupted data-parallel run."""
    import yaml
    from sebench.spec import RunConfig

    _, _, ref, _ = single_and_ddp
    record = yaml.safe_load((ref / "config.yaml").read_text())
    record.pop("run_id")
    cfg = RunConfig(**record)
    assert cfg.run_id == ref.name
    cfg_json = tmp_path / "cfg.json"
    cfg_json.write_text(cfg.model_dump_json())
    run = tmp_path / "run"
    codes = run_ranks(cfg_json, run, free_port(), kill_at=1)
    assert codes[0] == -signal.SIGKILL, (codes, rank_errors(tmp_path))
    assert not (run / "summary.json").exists() and len(read_jsonl(run / "metrics.jsonl")) == 1
    codes = run_ranks(cfg_json, run, free_port())
    assert codes == [0, 0], (codes, rank_errors(tmp_path))
    got, want = (json.loads((d / "summary.json").read_text()) for d in (run, ref))
    for k in ("final_test_top1_err", "final_test_top5_err", "final_test_loss", "final_train_loss"):
        assert got[k] == want[k], k  # bitwise: floats compared with ==
    keys = ("epoch", "train_loss", "train_top1_err", "test_loss", "test_top1_err", "test_top5_err", "lr")
    assert ([[r[k] for k in keys] for r in read_jsonl(run / "metrics.jsonl")]
            == [[r[k] for k in keys] for r in read_jsonl(ref / "metrics.jsonl")])
    resumes = json.loads((run / "env.json").read_text())["resumes"]
    assert [r["from_epoch"] for r in resumes] == [1]
