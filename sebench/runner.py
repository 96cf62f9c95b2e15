"""Executes the runs a spec expands into: what is missing runs, what was interrupted resumes, what finished
is skipped. Failures do not stop the sweep; they are listed at the end.

Concurrency: each run directory is guarded by a lock file (created with O_EXCL), so two runners started
on the same spec never execute the same run twice; a lock left by a dead process on this host is taken
over. With `jobs > 1`, runs go to a pool of worker processes that split the CPU threads between them
(or take one visible GPU each).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Optional

from sebench.errors import UserError
from sebench.spec import ExecutionCfg, PendingRow, RunConfig, Spec, expand
from sebench.store import run_dir as store_run_dir

LOCK_NAME = ".lock"


@dataclass
class PlanRow:
    run: RunConfig
    status: str  # finished | partial | failed | missing | locked
    directory: Path
    est_seconds: Optional[float] = None


@dataclass
class SweepResult:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run_id, reason)
    locked: list[str] = field(default_factory=list)


def run_status(directory: Path) -> str:
    summary = directory / "summary.json"
    if summary.is_file():
        try:
            status = json.loads(summary.read_text()).get("status")
        except (OSError, json.JSONDecodeError):
            status = None
        if status in ("finished", "failed"):
            return status
    if _lock_holder_alive(directory):
        return "locked"
    if (directory / "ckpt").is_dir() and any((directory / "ckpt").glob("*.pt")):
        return "partial"
    return "missing"


def plan(spec: Spec, profile: str, results: Path, overrides: Optional[dict] = None
         ) -> tuple[list[PlanRow], list[PendingRow]]:
    runs, pending = expand(spec, profile, overrides)
    rows = []
    for rc in runs:
        d = store_run_dir(results, rc.experiment, rc.run_id)
        rows.append(PlanRow(rc, run_status(d), d))
    return rows, pending


# ---- lock files -------------------------------------------------------------------------------------

def _lock_holder_alive(directory: Path) -> bool:
    lock = directory / LOCK_NAME
    try:
        holder = json.loads(lock.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: trust its lock (remove it by hand if that job died)
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError):
        return False
    except PermissionError:
        return True
    return True


def acquire_lock(directory: Path) -> bool:
    """Take the run's lock; False when a live process holds it. A stale lock (dead pid) is taken over."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_NAME
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()})
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            if _lock_holder_alive(directory):
                return False
            # Stale: remove and retry once; if another runner wins that race, O_EXCL tells us.
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return True
    return False


def release_lock(directory: Path) -> None:
    (directory / LOCK_NAME).unlink(missing_ok=True)


# ---- execution ----------------------------------------------------------------------------------------

def with_execution(rc: RunConfig, **execution) -> RunConfig:
    merged = {**rc.execution.model_dump(), **{k: v for k, v in execution.items() if v is not None}}
    return rc.model_copy(update={"execution": ExecutionCfg(**merged)})


def execute_one(rc: RunConfig, directory: str) -> tuple[str, str, str]:
    """Run one config under its lock. Returns (run_id, outcome, detail); outcome is finished, failed or
    locked. Runs in worker processes too, so it catches everything and reports it as data."""
    from sebench.engine import RunFailed, fit

    d = Path(directory)
    if not acquire_lock(d):
        return rc.run_id, "locked", "another runner holds this run"
    try:
        summary = fit(rc, d)
        return rc.run_id, "finished", f"test top-1 err {summary['final_test_top1_err']:.2f}%"
    except RunFailed as exc:
        return rc.run_id, "failed", str(exc)
    except UserError as exc:
        return rc.run_id, "failed", exc.render()
    except Exception as exc:  # a bug or an environment problem in one run must not end the sweep
        return rc.run_id, "failed", f"{type(exc).__name__}: {exc}"
    finally:
        release_lock(d)


def _worker_init(gpu: Optional[str]) -> None:
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu


def run_sweep(spec: Spec, profile: str, results: Path, *, jobs: int = 1, device: str = "auto",
              overrides: Optional[dict] = None, data_path: Optional[str] = None,
              cache_dir: Optional[str] = None, download: bool = False, progress: bool = True,
              log=print) -> SweepResult:
    rows, pending = plan(spec, profile, results, overrides)
    result = SweepResult()
    todo = []
    for row in rows:
        if row.status in ("finished",):
            result.skipped.append(row.run.run_id)
        elif row.status == "locked":
            result.locked.append(row.run.run_id)
        else:  # missing, partial (resumes), failed (retried: the cause may have been fixed)
            todo.append(row)
    for p in pending:
        log(f"pending  {_labels(p.labels)}: {p.reason}")
    log(f"{spec.name} [{profile}]: {len(rows)} runs: {len(result.skipped)} finished, "
        f"{len(result.locked)} running elsewhere, {len(todo)} to run")
    if not todo:
        return result

    gpus = _visible_gpus() if device in ("auto", "cuda") and jobs > 1 else []
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    configs = [with_execution(r.run, device=device, threads=threads, data_path=data_path, cache_dir=cache_dir,
                              download=download, progress=progress and jobs == 1) for r in todo]
    start = time.time()

    def report(rc: RunConfig, outcome: str, detail: str) -> None:
        done = len(result.finished) + len(result.failed) + len(result.locked)
        log(f"[{done}/{len(todo)}] {outcome:8s} {rc.run_id}  {_labels(rc.labels)} seed {rc.seed}: {detail}"
            f"  ({time.time() - start:.0f}s elapsed)")

    def record(rc: RunConfig, outcome: str, detail: str) -> None:
        if outcome == "finished":
            result.finished.append(rc.run_id)
        elif outcome == "locked":
            result.locked.append(rc.run_id)
        else:
            result.failed.append((rc.run_id, detail))

    if jobs <= 1:
        for rc, row in zip(configs, todo):
            log(f"--> {rc.run_id}  {_labels(rc.labels)} seed {rc.seed} ({row.status})")
            _, outcome, detail = execute_one(rc, str(row.directory))
            record(rc, outcome, detail)
            report(rc, outcome, detail)
        return result

    # One process per job; with several GPUs each worker sees exactly one of them.
    ctx = get_context("spawn")
    pools = []
    for j in range(jobs):
        gpu = gpus[j % len(gpus)] if gpus else None
        pools.append(ProcessPoolExecutor(1, mp_context=ctx, initializer=_worker_init, initargs=(gpu,)))
    try:
        futures = {}
        queue = list(zip(configs, todo))
        free = list(range(jobs))
        while queue or futures:
            while queue and free:
                j = free.pop()
                rc, row = queue.pop(0)
                futures[pools[j].submit(execute_one, rc, str(row.directory))] = (j, rc)
            done, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in done:
                j, rc = futures.pop(fut)
                free.append(j)
                try:
                    _, outcome, detail = fut.result()
                except Exception as exc:  # the worker process itself died
                    outcome, detail = "failed", f"worker died: {type(exc).__name__}: {exc}"
                record(rc, outcome, detail)
                report(rc, outcome, detail)
    finally:
        for p in pools:
            p.shutdown(cancel_futures=True)
    return result


def _visible_gpus() -> list[str]:
    try:
        import torch
        n = torch.cuda.device_count()
    except Exception:
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in env.split(",")] if env else [str(i) for i in range(n)]
    return ids[:n]


def _labels(labels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "(base)"


def print_failures(result: SweepResult, out=sys.stderr) -> None:
    for run_id, reason in result.failed:
        print(f"FAILED {run_id}: {reason}", file=out)
