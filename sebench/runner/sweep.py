"""A sweep: the runs a plan says are to do, executed one at a time or on a worker pool, each under its
run lock, with live progress; failures do not stop the sweep and are listed at the end.

Data-parallel (the process group of torchrun or a SLURM task is initialised): every rank walks the same
list of runs, which rank 0 plans and broadcasts; rank 0 takes each run's lock and tells the others
whether to train it; only rank 0 logs.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from sebench.engine.builders import amp_refusal, device_kind
from sebench.engine.env import available_cpus
from sebench.errors import UserError
from sebench.progress import SweepProgress
from sebench.runner.locks import acquire_lock, break_stale_lock, lock_state, release_lock
from sebench.runner.plan import labels_text, log_plan, plan, reuse_identical, run_status, with_execution
from sebench.runner.pool import Interrupted, run_pooled, visible_gpus
from sebench.spec import RunConfig, Spec
from sebench.store import RunDir, check_writable, clear_progress
from sebench.tracking import LiveMirror


@dataclass
class SweepResult:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run_id, reason)
    locked: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)  # adopted from an identical finished run (reuse_identical)
    damaged: list[tuple[str, str]] = field(default_factory=list)  # (run_id, what and the fix): quarantined
    foreign: list[tuple[str, str]] = field(default_factory=list)  # (run_id, whose lock): another host's, unverifiable

    @property
    def incomplete(self) -> bool:
        """The spec's table lacks runs that no runner of this machine is doing: failed, damaged, or held by
        another host's lock (which cannot be checked from here). A run a live local runner holds is not
        counted: that runner completes it."""
        return bool(self.failed or self.damaged or self.foreign)

    def outcomes(self):
        """(run_id, outcome) of every run of the sweep."""
        for outcome, ids in (("finished", self.finished), ("skipped", self.skipped), ("locked", self.locked),
                             ("reused", self.reused), ("failed", [rid for rid, _ in self.failed])):
            yield from ((rid, outcome) for rid in ids)


def execute_one(rc: RunConfig, directory: str) -> tuple[str, str, str]:
    """Run one config under its lock. Returns (run_id, outcome, detail); outcome is finished, failed,
    locked, or skipped (another runner finished it after this one planned). Runs in worker processes too,
    so it catches everything and reports it as data.

    In a process group (torchrun, multi-GPU SLURM task) every rank calls it: rank 0 takes the lock and
    broadcasts whether to train. There only the outcomes every rank reaches together (finished, a failed
    run, a UserError, which fit raises on every rank) are data; anything else ends this process, and the
    launcher stops the others, instead of leaving them waiting in a collective.
    """
    from sebench.engine import RunFailed, distributed, fit
    from sebench.engine.fit import ResumeSettingsChanged

    world = distributed.current()
    d = Path(directory)

    def claim() -> str:
        if not acquire_lock(d):
            return "locked"
        if run_status(d) == "finished":  # finished by another runner since this one planned
            release_lock(d)
            return "skipped"
        return "ok"

    claimed = distributed.on_main(claim, world)
    if claimed == "locked":
        return rc.run_id, "locked", "another runner holds this run"
    if claimed == "skipped":
        return rc.run_id, "skipped", "finished by another runner meanwhile"
    # fit's warning that a resume changed the execution settings goes back with the outcome instead: a
    # worker's stderr may be lost under the progress display, and the parent prints it once (see `end`).
    notices: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResumeSettingsChanged)
            summary = fit(rc, d, notices=notices)
        outcome, detail = "finished", f"test top-1 err {summary.final_test_top1_err:.2f}%"
    except RunFailed as exc:
        outcome, detail = "failed", str(exc)
    except UserError as exc:
        outcome, detail = "failed", exc.render()
    except Exception as exc:  # a bug or an environment problem in one run must not end the sweep
        if world.distributed:
            raise
        outcome, detail = "failed", f"{type(exc).__name__}: {exc}"
    finally:
        if world.is_main:
            release_lock(d)
    return rc.run_id, outcome, "".join([detail, *(NOTICE + n for n in notices)])


NOTICE = "\nwarning: "  # separates execute_one's detail from the warnings it carries, one line each


def check_data_parallel(runs: list[RunConfig], world_size: int, device: str = "auto",
                        sync_bn: Optional[bool] = None, where: str = "--nproc") -> None:
    """Before launching `world_size` processes per run: every run's batch must split evenly, and
    SyncBatchNorm needs CUDA. (fit checks the same; checking first gives one line, not N failed ranks.)"""
    if world_size <= 1:
        return
    bad = sorted({rc.batch_size for rc in runs if rc.batch_size % world_size})
    if bad:
        raise UserError(f"batch size(s) {bad} do not split evenly over {world_size} processes", where=where,
                        field="batch_size", fix=f"use a process count that divides {bad[0]}, or another batch")
    cpu = device_kind(device) == "cpu"
    if cpu and any(sync_bn or rc.execution.sync_bn for rc in runs):
        raise UserError("SyncBatchNorm needs CUDA (PyTorch has no CPU kernel for it)", where=where,
                        field="execution.sync_bn", fix="leave --sync-bn out for CPU runs")


def check_amp(runs: list[RunConfig], where: str) -> None:
    """Before launching: fit refuses an autocast dtype this device does not compute natively, run by run;
    checking first gives one message for the sweep instead of a failure per run."""
    refused = [(rc, exc) for rc in runs if (exc := amp_refusal(rc, rc.execution.device))]
    if refused:
        rc, exc = refused[0]
        raise UserError(f"{len(refused)} of the {len(runs)} runs to do ask for amp {rc.amp!r}: {exc.message}",
                        where=where, field="amp", fix=exc.fix)


def check_data_paths(runs: list[RunConfig], where: str) -> None:
    """Every distinct data set and path of the runs to do exists, before any worker starts."""
    from sebench.data.registry import check_data_path

    for name, path, download in sorted({(rc.data.name, rc.execution.data_path, rc.execution.download)
                                        for rc in runs}, key=str):
        check_data_path(name, path, download, where=where)


def run_sweep(spec: Spec, profile: str, results: Path, *, jobs: int = 1, device: str = "auto",
              overrides: Optional[dict] = None, data_path: Optional[str] = None,
              cache_dir: Optional[str] = None, download: bool = False, progress: bool = True,
              sync_bn: Optional[bool] = None, wandb: bool = False,
              only: Optional[dict[str, set[str]]] = None, reuse: bool = True,
              memory_check: bool = True, max_memory_gb: Optional[float] = None, log=print) -> SweepResult:
    """Run the spec's missing/partial/failed runs of `profile` (`jobs` at a time); with `reuse`, a missing
    run whose recipe another experiment has finished is adopted instead (reuse_identical). With `wandb`,
    this process logs each run's epochs to W&B while it trains and mirrors each run that ends or is adopted
    (tracking.LiveMirror: offline without an API key; a W&B failure warns once and never stops the sweep)."""
    from sebench.engine import distributed

    world = distributed.current()
    if world.distributed and jobs > 1:
        raise UserError("--jobs runs several runs at once; a data-parallel launch runs one run on all its "
                        "processes", where="--jobs", fix="use --jobs 1 with torchrun")
    if not world.is_main:
        log = _silent
    # The store must take writes before anything trains (rank 0 checks; a UserError reaches every rank).
    distributed.on_main(lambda: check_writable(RunDir.of(results, spec.name, "x").path.parent), world)
    # Rank 0 plans, every rank follows that plan: a run finishing elsewhere in between cannot make the
    # ranks disagree about what to train.
    def plan_reusing():
        rows, pending = plan(spec, profile, results, overrides, only)
        return (reuse_identical(rows, results, log) if reuse else rows), pending

    rows, pending = distributed.on_main(plan_reusing, world)
    result = SweepResult()
    mirror = LiveMirror(spec, profile, results, enabled=wandb and world.is_main)
    todo = []
    for row in rows:
        if row.status == "finished":
            result.skipped.append(row.run.run_id)
        elif row.status == "reused":
            result.reused.append(row.run.run_id)
            mirror.on_end(row.directory, "reused")
        elif row.status == "locked":
            result.locked.append(row.run.run_id)
            st = lock_state(row.directory)
            if st.state == "foreign":
                result.foreign.append((row.run.run_id, f"{st.describe(row.directory)}: {st.reason}; if that "
                                                       "job is no longer running, delete the lock file"))
        elif row.status == "damaged":  # quarantined: never overwritten behind the user's back
            from sebench.store import DamagedRun, read_checked_summary
            try:
                read_checked_summary(row.directory)
            except UserError as err:
                result.damaged.append((row.run.run_id, DamagedRun(row.directory, err).line()))
        else:  # missing, partial (resumes), failed (retried: the cause may have been fixed)
            todo.append(row)
    if world.is_main:
        for row in todo:  # a dead holder's lock (or a reused pid's) is taken over, and said so
            if (message := break_stale_lock(row.directory)):
                log(message)
    log_plan(spec.name, profile, rows, pending, f"{len(todo)} to run", log)
    if not todo:
        mirror.close()
        return result

    # 'auto' and 'cuda' spread the jobs over the visible GPUs (none visible: none to spread over)
    gpus = visible_gpus() if jobs > 1 and device_kind(device, cuda_available=True) == "cuda" else []
    # The cores this process may use (its affinity: `taskset`, a SLURM allocation), not the machine's.
    threads = max(1, available_cpus() // jobs) if jobs > 1 else None
    # fit draws nothing itself: SweepProgress shows every job count alike, from the run directories.
    configs = [with_execution(r.run, device=device, threads=threads, data_path=data_path, cache_dir=cache_dir,
                              download=download, progress=False, sync_bn=sync_bn)
               for r in todo]
    try:
        check_amp(configs, where=spec.path)
        check_data_paths(configs, where=spec.path)
        if memory_check:  # before any worker starts: one line, not an allocation of hundreds of GB
            from sebench.engine.memory import check_memory
            check_memory(configs, jobs=jobs, device=device, max_memory_gb=max_memory_gb, where=spec.path)
    except UserError:
        mirror.close()  # the adopted runs it may have mirrored above are closed, not left open
        raise
    start = time.time()
    reported = [0]
    directories = {r.run.run_id: r.directory for r in todo}
    watch = SweepProgress(f"{spec.name} [{profile}]",
                          [(rc.run_id, f"{rc.run_id} {labels_text(rc.labels)} seed {rc.seed}", rc.epochs,
                            directories[rc.run_id]) for rc in configs],
                          jobs=jobs, enabled=progress and world.is_main)
    log = watch.above(log)

    def begin(rc: RunConfig, status: str, slot: int) -> None:
        log(f"--> {rc.run_id}  {labels_text(rc.labels)} seed {rc.seed} ({status})")
        watch.started(rc.run_id, slot, fresh=not RunDir(directories[rc.run_id]).has_checkpoint())
        mirror.on_start(directories[rc.run_id])

    def end(rc: RunConfig, outcome: str, detail: str) -> None:
        detail, *notices = detail.split(NOTICE)
        for line in notices:
            log(f"warning: {line}")
        watch.ended(rc.run_id, outcome)
        mirror.on_end(directories[rc.run_id], outcome)
        if outcome == "finished":
            result.finished.append(rc.run_id)
        elif outcome == "skipped":
            result.skipped.append(rc.run_id)
        elif outcome == "locked":
            result.locked.append(rc.run_id)
        else:
            result.failed.append((rc.run_id, detail))
        reported[0] += 1
        log(f"[{reported[0]}/{len(todo)}] {outcome:8s} {rc.run_id}  {labels_text(rc.labels)} seed {rc.seed}: {detail}"
            f"  ({time.time() - start:.0f}s elapsed)")

    with watch, mirror:
        if jobs <= 1:
            for rc, row in zip(configs, todo):
                begin(rc, row.status, 0)
                try:
                    outcome = execute_one(rc, str(row.directory))
                except KeyboardInterrupt:  # execute_one released the run's lock, fit cleared its heartbeat
                    raise Interrupted([rc]) from None
                end(rc, *outcome[1:])
        else:
            try:
                run_pooled(execute_one, list(zip(configs, todo)), jobs, gpus, begin, end)
            except Interrupted as stop:
                for rc in stop.runs:  # their workers were ended: the locks are stale, the heartbeats too
                    break_stale_lock(directories[rc.run_id])
                    clear_progress(directories[rc.run_id])
                raise
    return result


def _silent(*args, **kwargs) -> None:
    pass


def print_failures(result: SweepResult, out=None) -> None:
    out = out or sys.stderr  # looked up per call (a default bound at import outlives a redirected stderr)
    for run_id, reason in result.failed:
        print(f"FAILED {run_id}: {reason}", file=out)
    for _, line in result.damaged:
        print(f"DAMAGED {line}", file=out)
    for run_id, line in result.foreign:
        print(f"LOCKED {run_id}: {line}", file=out)
