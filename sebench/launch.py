"""`sebench run --launcher torchrun --nproc N`: one torchrun for the whole sweep.

torchrun starts N copies of `python -m sebench run ... --launcher none`; each finds WORLD_SIZE/RANK/
LOCAL_RANK in its environment, joins the process group (NCCL on CUDA, gloo on CPU) and walks the sweep
with the others, one data-parallel run after another (see runner.run_sweep and engine/distributed.py).
Starting torchrun by hand works the same way (`torchrun --nproc_per_node N -m sebench run SPEC ...`), also
across machines with torchrun's own --nnodes/--rdzv options.

The command is an argv list built from the parsed options: no shell, so nothing in a spec name, a path or
a --set value is ever interpreted by one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Optional

from sebench.errors import UserError

# `run` options forwarded to the ranks, as (attribute, flag, kind). A new `run` option that the ranks
# need must be added here (tests/test_distributed.py checks that every option is forwarded or excluded).
FORWARDED: tuple[tuple[str, str, str], ...] = (
    ("profile", "--profile", "value"),
    ("results", "--results", "value"),
    ("device", "--device", "value"),
    ("set", "--set", "list"),
    ("only", "--only", "list"),
    ("data_path", "--data-path", "value"),
    ("cache_dir", "--cache-dir", "value"),
    ("download", "--download", "flag"),
    ("no_progress", "--no-progress", "flag"),
    ("sync_bn", "--sync-bn", "flag"),
    ("wandb", "--wandb", "flag"),
    ("no_reuse", "--no-reuse", "flag"),
    ("max_runs", "--max-runs", "value"),
    ("max_memory", "--max-memory", "value"),
    ("ignore_memory_check", "--ignore-memory-check", "flag"),
)
# Options of the launcher itself (meaningless inside the ranks).
NOT_FORWARDED = frozenset({"spec", "launcher", "nproc", "jobs", "partition", "gpus_per_node", "time",
                           "account", "nodes", "cluster", "wait", "slurm_folder", "func", "command"})


def forwarded_args(args) -> list[str]:
    """The `sebench run` arguments every rank gets, rebuilt from the parsed options."""
    out = [str(args.spec)]
    for attr, flag, kind in FORWARDED:
        value = getattr(args, attr, None)
        if kind == "flag":
            if value:
                out.append(flag)
        elif kind == "list":
            for item in value or []:
                out += [flag, str(item)]
        elif value is not None:
            out += [flag, str(value)]
    return out


def torchrun_argv(args, nproc: int, python: Optional[str] = None) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc_per_node N -m sebench run ... --launcher none`
    (the torchrun console script is the same module; calling it through this interpreter needs no PATH)."""
    return [python or sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            str(nproc), "-m", "sebench", "run", *forwarded_args(args), "--launcher", "none"]


def rank_env(nproc: int, base: Optional[dict] = None) -> dict:
    """The ranks' environment: CPU threads split between the processes (torchrun would otherwise force
    OMP_NUM_THREADS=1 with a warning) and cuBLAS's deterministic workspace set before CUDA starts."""
    env = dict(os.environ if base is None else base)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpus // nproc)))
    env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return env


def default_nproc(device: str) -> int:
    """One process per visible GPU when the runs' (resolved) device is CUDA; on a CPU the count must be
    given."""
    import torch

    count = torch.cuda.device_count() if device == "cuda" else 0
    if count < 1:
        raise UserError("no GPU visible to count processes from", where="--nproc",
                        fix="give --nproc N (on CPU, N processes share the cores)")
    return count


def check_launch(args, nproc: int) -> None:
    if nproc < 1:
        raise UserError("--nproc must be at least 1", where="--nproc")
    if args.jobs != 1:
        raise UserError("--jobs and --launcher torchrun do not combine: torchrun trains one run at a time on "
                        "all its processes", where="--jobs", fix="leave --jobs at 1")


def run_torchrun(args, nproc: int) -> int:
    """Start the ranks, wait for them, and return torchrun's exit status (non-zero if any rank failed)."""
    check_launch(args, nproc)
    argv = torchrun_argv(args, nproc)
    print(f"launching {nproc} processes: {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    try:
        return subprocess.run(argv, env=rank_env(nproc), check=False).returncode
    except KeyboardInterrupt:  # the ranks got the same SIGINT from the terminal
        return 130
