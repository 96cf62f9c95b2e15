"""Worker processes for `--jobs N`: one single-process pool per job (spawned, so CUDA starts fresh), each
restricted to one visible GPU where there are GPUs, or sharing the CPU threads. A worker that dies fails
only its run; its slot gets a fresh pool.
"""

from __future__ import annotations

import os
import sys
import warnings
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_context
from typing import Any, Callable, Optional


def _worker_init(gpu: Optional[str]) -> None:
    _die_with_parent()
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def _die_with_parent() -> None:
    """A worker must not go on training (and writing its run) after the runner that started it was
    killed: on Linux, ask the kernel for SIGTERM when the parent dies. The run resumes next time."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)


def assign_gpus(jobs: int, gpus: list[str]) -> list[Optional[str]]:
    """The GPU (a CUDA_VISIBLE_DEVICES entry) of each of `jobs` workers: worker j gets gpus[j], so each
    run sees exactly one GPU as cuda:0. More workers than GPUs share them round-robin (with a warning);
    no GPU: None (the worker keeps the environment as it is)."""
    if not gpus:
        return [None] * jobs
    if jobs > len(gpus):
        warnings.warn(f"--jobs {jobs} with {len(gpus)} GPU(s): {jobs - len(gpus)} worker(s) share a GPU",
                      RuntimeWarning, stacklevel=2)
    return [gpus[j % len(gpus)] for j in range(jobs)]


def make_pools(jobs: int, gpus: list[str]) -> list[ProcessPoolExecutor]:
    """One single-process pool per job (spawned, so CUDA starts fresh), each restricted to its GPU."""
    ctx = get_context("spawn")
    return [ProcessPoolExecutor(1, mp_context=ctx, initializer=_worker_init, initargs=(gpu,))
            for gpu in assign_gpus(jobs, gpus)]


def run_pooled(work: Callable[[Any, str], tuple[str, str, str]], queue: list[tuple[Any, Any]], jobs: int,
               gpus: list[str], begin, end) -> None:
    """Run `work(rc, directory)` for each (RunConfig, PlanRow) of the queue on `jobs` single-process pools
    (one GPU each where there are GPUs). A worker that dies (killed, out of memory) fails only its run: its
    records stay for the next sweep to resume, and its slot gets a fresh pool for the runs still queued."""
    pools = make_pools(jobs, gpus)  # one process per job; with several GPUs each worker sees exactly one
    futures = {}
    try:
        free = list(range(jobs))[::-1]
        while queue or futures:
            while queue and free:
                j = free.pop()
                rc, row = queue.pop(0)
                begin(rc, row.status, j)
                futures[pools[j].submit(work, rc, str(row.directory))] = (j, rc)
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in done:
                j, rc = futures.pop(fut)
                free.append(j)
                try:
                    _, outcome, detail = fut.result()
                except Exception as exc:  # the worker process itself died
                    outcome, detail = "failed", f"worker died: {type(exc).__name__}: {exc}"
                    if isinstance(exc, BrokenProcessPool):
                        pools[j].shutdown(wait=False)
                        gpu = assign_gpus(jobs, gpus)[j]
                        pools[j] = make_pools(1, [] if gpu is None else [gpu])[0]
                end(rc, outcome, detail)
    except KeyboardInterrupt:
        # Ctrl-C: stop the workers now instead of waiting for their runs (each keeps its last epoch's
        # checkpoint), then say which runs were stopped.
        stop_pools(pools)
        raise Interrupted([rc for _, rc in futures.values()]) from None
    finally:
        for p in pools:  # after stop_pools: only joins the pools' threads, closing their queues and semaphores
            p.shutdown(cancel_futures=True)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep: `runs` (RunConfigs) were stopped mid-training, their workers ended."""

    def __init__(self, runs: list) -> None:
        super().__init__(f"{len(runs)} run(s) stopped")
        self.runs = runs


def stop_pools(pools: list[ProcessPoolExecutor], grace_s: float = 5.0) -> None:
    """End every pool's worker process (SIGTERM, then SIGKILL after `grace_s`) and wait for it. A second
    Ctrl-C meanwhile is ignored: it would leave workers (and their semaphores) behind."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        # ProcessPoolExecutor has no public way to end a busy worker: its _processes are the worker processes.
        procs = [proc for pool in pools for proc in list((getattr(pool, "_processes", None) or {}).values())]
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(grace_s)
            if proc.is_alive():
                proc.kill()
                proc.join()
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)


def visible_gpus() -> list[str]:
    """The CUDA_VISIBLE_DEVICES entries of the GPUs this process sees ([] without CUDA)."""
    try:
        import torch
        n = torch.cuda.device_count()
    except Exception:
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in env.split(",")] if env else [str(i) for i in range(n)]
    return ids[:n]
