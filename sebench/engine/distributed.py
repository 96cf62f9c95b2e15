"""Data-parallel training across processes: who this process is, the process group, and the few
collectives the engine needs.

How a run is split (see docs/scaling.md):

* Every process ("rank") builds the same model, loader and optimizer from the same RunConfig. DDP averages
  the gradients, so each step is the single-process step on the global batch (cfg.batch_size): the
  in-memory loader gives rank r the r-th contiguous slice of every global batch, drawn from the same
  (seed, epoch) permutation and augmentation draws as a single process would use.
* Evaluation shards the test set; correct counts, loss sums and image counts are summed across ranks
  (all_reduce), so the errors are those of the whole test set.
* Only rank 0 writes to the store (config, env, metrics, checkpoints, summary). Decisions that depend
  on the store (is the run finished, which checkpoint to resume, is the log consistent) are taken on
  rank 0 and broadcast, so all ranks take the same branch and nobody waits forever in a collective.

Launchers: `torchrun` (or any launcher that exports WORLD_SIZE/RANK/LOCAL_RANK and MASTER_ADDR/PORT),
`sebench run --launcher torchrun`, and SLURM tasks through submitit (sebench/slurm.py). Backend: NCCL
when the run is on CUDA, gloo on CPU.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist

from sebench.errors import UserError

T = TypeVar("T")
ENV_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class World:
    """This process's place in the job: rank among `size` processes, `local_rank` among the
    `local_size` processes on this machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: Optional[int] = None) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise UserError(f"environment variable {name}={value!r} is not an integer", where=name,
                        fix="launch with torchrun, or unset the torch.distributed variables") from None


def launched_world() -> Optional[World]:
    """The world a launcher (torchrun, submitit's TorchDistributedEnvironment) described in the
    environment, or None when WORLD_SIZE is not set."""
    size = _env_int("WORLD_SIZE")
    if size is None:
        return None
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", rank)
    local_size = _env_int("LOCAL_WORLD_SIZE", size)
    if size < 1 or not 0 <= rank < size or not 0 <= local_rank < max(local_size, 1):
        raise UserError(f"inconsistent launcher environment: WORLD_SIZE={size}, RANK={rank}, "
                        f"LOCAL_RANK={local_rank}, LOCAL_WORLD_SIZE={local_size}", where="environment")
    return World(rank, size, local_rank, local_size)


def current() -> World:
    """The world of the initialised default process group (World() when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    size, rank = dist.get_world_size(), dist.get_rank()
    env = launched_world()
    if env is not None and env.size == size and env.rank == rank:
        return World(rank, size, env.local_rank, env.local_size)
    return World(rank, size, rank, size)  # e.g. spawned in tests: one machine


def backend_for(device: str) -> str:
    """NCCL for CUDA runs, gloo for CPU runs (`device` resolved: builders.device_kind)."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


@contextmanager
def process_group(device: str = "cpu", timeout_min: float = 30.0) -> Iterator[World]:
    """Join the process group the launcher described (env://) for the duration of the block; yield the
    world. `device`: the runs' device, resolved (builders.device_kind), which picks the backend. Without a
    launcher (or WORLD_SIZE=1) nothing is initialised and the world has one process."""
    env = launched_world()
    if env is None or env.size == 1 or (dist.is_available() and dist.is_initialized()):
        yield current() if env is not None and env.size > 1 else World()
        return
    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed", where="WORLD_SIZE")
    backend = backend_for(device)
    if backend == "nccl":
        torch.cuda.set_device(cuda_index(env))
    dist.init_process_group(backend, init_method="env://", timeout=timedelta(minutes=timeout_min))
    completed = False
    try:
        yield current()
        completed = True
    finally:
        if completed:  # every rank is done talking before any closes its connections: gloo aborts a
            dist.barrier()  # process (SIGABRT) whose peer hangs up while a transfer is still in flight
        dist.destroy_process_group()  # (after an error a peer may be gone: no barrier to wait on)


def cuda_index(world: World) -> int:
    """The GPU of this process: LOCAL_RANK among the visible GPUs, or the only visible one (a launcher
    that sets CUDA_VISIBLE_DEVICES per process)."""
    count = torch.cuda.device_count()
    if count == 1:
        return 0
    if world.local_rank < count:
        return world.local_rank
    raise UserError(f"{world.local_size} processes on this machine but only {count} GPU(s) visible",
                    where="--nproc", fix="start at most one process per GPU")


# ---- collectives ------------------------------------------------------------------------------------------

def broadcast_object(obj: T, world: World, src: int = 0) -> T:
    """`obj` from rank `src` on every rank (pickled between our own processes only)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(obj: Any, world: World) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank."""
    if not world.distributed:
        return [obj]
    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def on_main(fn: Callable[[], T], world: World) -> T:
    """Run `fn` on rank 0 only and give its result to every rank. An exception on rank 0 is raised on
    every rank (a UserError as the same UserError), so no rank is left waiting in a collective."""
    if not world.distributed:
        return fn()
    outcome: tuple
    if world.is_main:
        try:
            outcome = ("ok", fn())
        except UserError as err:
            outcome = ("user", (err.message, err.where, err.field, err.fix))
            broadcast_object(outcome, world)
            raise
        except BaseException as exc:
            outcome = ("error", f"{type(exc).__name__}: {exc}")
            broadcast_object(outcome, world)
            raise
        return broadcast_object(outcome, world)[1]
    kind, value = broadcast_object(None, world)
    if kind == "ok":
        return value
    if kind == "user":
        message, where, field, fix = value
        raise UserError(message, where=where, field=field, fix=fix)
    raise RuntimeError(f"rank 0 failed: {value}")


def all_reduce_sum(values: Sequence[torch.Tensor | float | int], device: torch.device,
                   world: World) -> list[float]:
    """Sums across ranks of a few scalars (in float64: exact for counts below 2**53)."""
    vec = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
    if world.distributed:
        dist.all_reduce(vec, op=dist.ReduceOp.SUM)
    return vec.tolist()


def broadcast_buffers(model: torch.nn.Module, world: World) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics), so that every rank evaluates the
    model rank 0 checkpoints."""
    if not world.distributed:
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def rank_seed(seed: int, rank: int, epoch: int = 0) -> int:
    """The global-RNG seed of rank r > 0 (rank 0 keeps the run's seed, so one process is unchanged):
    dropout masks then differ between ranks, as the samples do. `epoch` > 0: a fresh stream for a resume
    whose checkpoint lacks this rank's state."""
    digest = hashlib.sha256(f"sebench-rank:{seed}:{rank}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1
