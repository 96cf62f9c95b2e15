"""Executes the runs a spec expands into: what is missing runs, what was interrupted resumes, what finished
is skipped. Failures do not stop the sweep; they are listed at the end.

Concurrency: each run directory is guarded by a lock file (created atomically with its content, by a
hard link), so two runners started on the same spec never execute the same run twice; a lock left by a
dead process on this host, or by an earlier attempt of the same SLURM job (requeued after preemption),
is taken over. Checking and taking over happen under an flock of the run directory, so two runners on
one host cannot both take over the same stale lock. With `jobs > 1`, runs go to a pool of worker
processes that split the CPU threads between them, or take one visible GPU each (see assign_gpus).

Data-parallel (the process group of torchrun or a SLURM task is initialised): every rank walks the same
list of runs, which rank 0 plans and broadcasts; rank 0 takes each run's lock and tells the others
whether to train it; only rank 0 logs.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time
import warnings
from collections import Counter
from contextlib import contextmanager
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Optional

from sebench.data.registry import default_data_path
from sebench.engine.env import available_cpus
from sebench.errors import UserError
from sebench.progress import SweepProgress
from sebench.spec import ExecutionCfg, PendingRow, RunConfig, Spec, expand
from sebench.store import check_writable
from sebench.store import run_dir as store_run_dir
from sebench.tracking import LiveMirror

LOCK_NAME = ".lock"


@dataclass
class PlanRow:
    run: RunConfig
    status: str  # finished | partial | failed | missing | locked; reusable (plan) | reused (run)
    directory: Path
    est_seconds: Optional[float] = None


@dataclass
class SweepResult:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (run_id, reason)
    locked: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)  # adopted from an identical finished run (reuse_identical)

    def outcomes(self):
        """(run_id, outcome) of every run of the sweep."""
        for outcome, ids in (("finished", self.finished), ("skipped", self.skipped), ("locked", self.locked),
                             ("reused", self.reused), ("failed", [rid for rid, _ in self.failed])):
            yield from ((rid, outcome) for rid in ids)


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
    if has_checkpoint(directory):
        return "partial"
    return "missing"


def has_checkpoint(directory: Path) -> bool:
    """Whether the run resumes (from its last epoch checkpoint) rather than training from epoch 1."""
    return (directory / "ckpt").is_dir() and any((directory / "ckpt").glob("*.pt"))


def parse_only(items: Optional[list[str]], spec: Spec, profile: str) -> dict[str, set[str]]:
    """`--only AXIS=LABEL` (repeatable; also `seed=N`) -> {axis: labels}. Several labels of one axis are
    alternatives; different axes all apply. Unknown axes or labels are the user's to fix."""
    from sebench.spec import profile_axes

    allowed = {a.axis: [v.label for v in a.values] for a in profile_axes(spec, profile)}
    allowed["seed"] = [str(s) for s in (spec.profiles[profile].seeds or spec.seeds)]
    only: dict[str, set[str]] = {}
    for item in items or []:
        axis, sep, label = (part.strip() for part in item.partition("="))
        if not sep or axis not in allowed:
            raise UserError(f"--only {item!r} names no sweep axis of {spec.name} ({profile})", where=spec.path,
                            field="--only", fix=f"use AXIS=LABEL with AXIS one of: {', '.join(allowed)}")
        if label not in allowed[axis]:
            raise UserError(f"--only {item!r}: {axis} has no value {label!r} in profile {profile!r}",
                            where=spec.path, field="--only",
                            fix=f"{axis} values: {', '.join(repr(v) for v in allowed[axis])}")
        only.setdefault(axis, set()).add(label)
    return only


def _selected(labels: dict, seed: Optional[int], only: dict[str, set[str]]) -> bool:
    return all((str(seed) if axis == "seed" else labels.get(axis)) in values
               for axis, values in only.items() if axis != "seed" or seed is not None)


def plan(spec: Spec, profile: str, results: Path, overrides: Optional[dict] = None,
         only: Optional[dict[str, set[str]]] = None) -> tuple[list[PlanRow], list[PendingRow]]:
    """The runs of `spec` in `profile` (those `only` selects, see parse_only) with their store status,
    and the pending rows."""
    runs, pending = expand(spec, profile, overrides)
    if only:
        runs = [rc for rc in runs if _selected(rc.labels, rc.seed, only)]
        pending = [p for p in pending if _selected(p.labels, None, only)]
    # Seed-major (every row of the first seed, then the next seed, ...; the table's order within a seed):
    # a sweep stopped part-way leaves whole seeds, so the partial table is still a balanced paired comparison.
    first = {}
    for rc in runs:
        first.setdefault(rc.seed, len(first))
    runs.sort(key=lambda rc: first[rc.seed])
    rows = []
    for rc in runs:
        d = store_run_dir(results, rc.experiment, rc.run_id)
        rows.append(PlanRow(rc, run_status(d), d))
    return rows, pending


# ---- cost estimate ----------------------------------------------------------------------------------------

_CALIBRATION: dict[str, float] = {}
_FLOPS: dict[tuple, int] = {}


def _training_rate(device: str) -> float:
    """Multiply-adds per second this device sustains in training (forward+backward), measured once per
    process on a CIFAR ResNet-20 at batch 64: the estimate's only measured input."""
    if device not in _CALIBRATION:
        from sebench.bench import count_flops, measure_throughput
        from sebench.models import build_model

        model = build_model("resnet20")
        img_s = measure_throughput(model, input_size=(3, 32, 32), batch_size=64, device=device, train=True,
                                   warmup=1, iters=3)["img_s"]
        _CALIBRATION[device] = img_s * count_flops(model, (3, 32, 32))
    return _CALIBRATION[device]


def cpu_busy_note(device: str) -> str:
    """Why a CPU estimate may be too high: the calibration shares the cores with whatever else runs (a sweep
    in the background makes it several times too long). Empty when the CPU was idle or the device is a GPU."""
    if resolve_device_name(device) != "cpu" or not hasattr(os, "getloadavg"):
        return ""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load < 0.5 * cores:
        return ""
    return (f" (measured while the CPU was busy, load {load:.1f} on {cores} cores: too high; "
            f"rerun `sebench plan` on an idle machine)")


def resolve_device_name(device: str) -> str:
    if device != "auto":
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def measured_seconds(rows: list[PlanRow], device: str = "auto") -> dict[str, tuple[float, int]]:
    """{run_id: (median wall_s, n)} for each row whose recipe, seed aside, has n finished runs in its store
    folder that trained on this device model (env.json device_name). What a run really took here, at the
    threads and beside whatever load it had, where the calibration guesses from a few seconds of steps on
    the cores free at that moment. Runs adopted from another experiment (`reused_from`) are left out."""
    import statistics

    from sebench.bench import device_name
    from sebench.store import read_finished_run

    here = device_name(resolve_device_name(device))

    def recipe(rc: RunConfig) -> str:
        return json.dumps({k: v for k, v in rc.identity().items() if k != "seed"}, sort_keys=True)

    walls: dict[str, list[float]] = {}
    for folder in {row.directory.parent for row in rows}:
        for d in sorted(folder.glob("*/summary.json")):
            try:
                cfg, _, summary, _ = read_finished_run(d.parent)
                env = json.loads((d.parent / "env.json").read_text())
            except (UserError, OSError, json.JSONDecodeError):
                continue  # unfinished, damaged or foreign: no measurement
            wall = summary.get("wall_s")
            if isinstance(wall, (int, float)) and wall > 0 and not summary.get("reused_from") \
                    and env.get("device_name") == here:
                walls.setdefault(recipe(cfg), []).append(float(wall))
    return {row.run.run_id: (statistics.median(w), len(w)) for row in rows if (w := walls.get(recipe(row.run)))}


def estimate_seconds(rc: RunConfig, device: str = "auto") -> Optional[float]:
    """Rough time for a run: epochs x (train images x model MACs / measured training rate, plus the test
    pass at a third of the training cost per image). None when the data set's size is not fixed."""
    from sebench.bench import count_flops
    from sebench.data import get_info
    from sebench.models import build_model

    device = resolve_device_name(device)
    info = get_info(rc.data.name)
    if info.splits is None:
        return None
    n_train = min(info.splits[0], rc.data.train_subset or info.splits[0])
    n_test = min(info.splits[1], rc.data.test_subset or info.splits[1])
    size = rc.data.image_size or info.image_size
    key = (rc.model.name, rc.model.se, rc.model.se_stages, size, tuple(sorted(rc.model.kwargs.items())))
    if key not in _FLOPS:
        model = build_model(rc.model.name, info.num_classes, se=rc.model.se, se_stages=rc.model.se_stages,
                            **rc.model.kwargs)
        _FLOPS[key] = count_flops(model, (3, size, size))
    per_epoch = (n_train + n_test / 3) * _FLOPS[key] / _training_rate(device)
    return rc.epochs * per_epoch


# ---- lock files -------------------------------------------------------------------------------------

def _job_id() -> Optional[str]:
    """The scheduler job this process belongs to (SLURM keeps the id when it requeues a job)."""
    return os.environ.get("SLURM_JOB_ID") or None


def _read_lock(directory: Path) -> Optional[dict]:
    try:
        holder = json.loads((directory / LOCK_NAME).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def _lock_holder_alive(directory: Path) -> bool:
    holder = _read_lock(directory)
    if holder is None:
        return False  # written atomically, so unreadable means damaged, not half-written
    job = _job_id()
    if job is not None and holder.get("job") == job and holder.get("pid") != os.getpid():
        return False  # an earlier attempt of this very SLURM job (preempted, now requeued)
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: trust its lock (remove it by hand if that job died)
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError, TypeError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def _directory_flock(directory: Path):
    """Serialise lock decisions about one run directory among the processes of this host."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic link below still prevents double creation
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # e.g. NFS, which emulates flock with write locks: do without (see acquire_lock)
            pass
        yield
    finally:
        os.close(fd)  # releases the flock


def _create_lock(lock: Path) -> bool:
    """Create `lock` with its content in one step (False when it exists): written to a temp file, then
    hard-linked into place, so no reader ever sees an empty lock file."""
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                         "job": _job_id()})
    tmp = lock.with_name(f"{LOCK_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(record)
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create, then write
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def acquire_lock(directory: Path) -> bool:
    """Take the run's lock; False when a live process holds it. A stale lock (dead pid on this host,
    or an earlier attempt of this SLURM job) is taken over."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_NAME
    with _directory_flock(directory):
        for _ in range(2):
            if _create_lock(lock):
                return True
            if _lock_holder_alive(directory):
                return False
            lock.unlink(missing_ok=True)  # stale; a runner on another host may still win the retry
    return False


def release_lock(directory: Path) -> None:
    """Remove the run's lock if this process holds it (never another runner's)."""
    holder = _read_lock(directory)
    if holder is not None and (holder.get("pid"), holder.get("host")) != (os.getpid(), socket.gethostname()):
        return
    (directory / LOCK_NAME).unlink(missing_ok=True)


# ---- reuse across experiments ---------------------------------------------------------------------------

def find_reusable(rows: list[PlanRow], results: Path) -> dict[str, Path]:
    """{run_id: folder} for each missing row whose recipe an original finished run of the store has
    trained in another experiment (store.recipe_key: same model, data, optimiser, schedule, seed, profile...;
    only the experiment name differs). The SE paper's ablation tables share one baseline, and so do this
    suite's specs: training it once per table costs the same and gives the same numbers (same seed and data
    order)."""
    from sebench.store import iter_summaries, read_finished_run, recipe_key

    missing = [r for r in rows if r.status == "missing"]
    if not missing:
        return {}
    donors: dict[str, Path] = {}
    for directory, summary in iter_summaries(results):
        if summary.get("status") != "finished" or summary.get("reused_from"):
            continue  # only originals donate: provenance points at the run that trained
        try:
            cfg = read_finished_run(directory)[0]
        except UserError:
            continue  # unreadable or from an older schema: not provably the same recipe
        donors.setdefault(recipe_key(cfg), directory)
    found = {}
    for row in missing:
        source = donors.get(recipe_key(row.run))
        if source is not None and source != row.directory:
            found[row.run.run_id] = source
    return found


def reuse_identical(rows: list[PlanRow], results: Path, log=print) -> list[PlanRow]:
    """Adopt each run find_reusable finds (store.adopt_run); those rows get status 'reused'.
    `--no-reuse` trains them anyway."""
    from sebench.store import adopt_run

    sources = find_reusable(rows, results)
    for row in rows:
        source = sources.get(row.run.run_id)
        if source is None or not acquire_lock(row.directory):
            continue
        try:
            if run_status(row.directory) != "finished":
                adopt_run(source, row.run, row.directory)
            row.status = "reused"
            log(f"reused   {row.run.run_id}  {_labels(row.run.labels)} seed {row.run.seed}: the same recipe "
                f"finished as {source.parent.name}/{source.name}")
        finally:
            release_lock(row.directory)
    return rows


# ---- execution ----------------------------------------------------------------------------------------

def with_execution(rc: RunConfig, **execution) -> RunConfig:
    """`rc` with these execution settings (None keeps the run's own). A run that still has no data path
    takes $SEBENCH_<DATASET> (data.default_data_path) here, at planning time, so the path is recorded in
    the run and training itself reads no environment."""
    merged = {**rc.execution.model_dump(), **{k: v for k, v in execution.items() if v is not None}}
    if merged.get("data_path") is None:
        merged["data_path"] = default_data_path(rc.data.name)
    return rc.model_copy(update={"execution": ExecutionCfg(**merged)})


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
    try:
        summary = fit(rc, d)
        return rc.run_id, "finished", f"test top-1 err {summary['final_test_top1_err']:.2f}%"
    except RunFailed as exc:
        return rc.run_id, "failed", str(exc)
    except UserError as exc:
        return rc.run_id, "failed", exc.render()
    except Exception as exc:  # a bug or an environment problem in one run must not end the sweep
        if world.distributed:
            raise
        return rc.run_id, "failed", f"{type(exc).__name__}: {exc}"
    finally:
        if world.is_main:
            release_lock(d)


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
    cpu = device == "cpu" or (device == "auto" and not _cuda_available())
    if cpu and any(sync_bn or rc.execution.sync_bn for rc in runs):
        raise UserError("SyncBatchNorm needs CUDA (PyTorch has no CPU kernel for it)", where=where,
                        field="execution.sync_bn", fix="leave --sync-bn out for CPU runs")


def amp_refusal(rc: RunConfig, device: str = "auto") -> Optional[UserError]:
    """Why this device would refuse the run's autocast dtype (fit.resolve_amp: e.g. bf16 on a CPU without
    native bf16), or None when it takes it."""
    if rc.amp == "off":
        return None
    import torch

    from sebench.engine.fit import resolve_amp
    try:
        resolve_amp(rc.amp, torch.device(resolve_device_name(device)))
    except UserError as exc:
        return exc
    return None


def check_amp(runs: list[RunConfig], where: str) -> None:
    """Before launching: fit refuses an autocast dtype this device does not compute natively, run by run;
    checking first gives one message for the sweep instead of a failure per run."""
    refused = [(rc, exc) for rc in runs if (exc := amp_refusal(rc, rc.execution.device))]
    if refused:
        rc, exc = refused[0]
        raise UserError(f"{len(refused)} of the {len(runs)} runs to do ask for amp {rc.amp!r}: {exc.message}",
                        where=where, field="amp", fix=exc.fix)


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def todo_rows(spec: Spec, profile: str, results: Path, overrides: Optional[dict] = None,
              only: Optional[dict[str, set[str]]] = None
              ) -> tuple[list[PlanRow], list[PlanRow], list[PendingRow]]:
    """(all rows, rows to run, pending rows): missing, partial (resumes) and failed (retried: the cause
    may have been fixed) runs are to run; finished and locked ones are not."""
    rows, pending = plan(spec, profile, results, overrides, only)
    return rows, [r for r in rows if r.status not in ("finished", "locked")], pending


def log_plan(name: str, profile: str, rows: list[PlanRow], pending: list[PendingRow], todo: str, log) -> None:
    """The lines every launcher starts a sweep with: the pending rows, then what the store holds and `todo`
    (e.g. "3 to run")."""
    for p in pending:
        log(f"pending  {_labels(p.labels)}: {p.reason}")
    count = Counter(r.status for r in rows)
    log(f"{name} [{profile}]: {len(rows)} runs: {count['finished']} finished, "
        + (f"{count['reused']} reused, " if count["reused"] else "")
        + f"{count['locked']} running elsewhere, {todo}")


def run_sweep(spec: Spec, profile: str, results: Path, *, jobs: int = 1, device: str = "auto",
              overrides: Optional[dict] = None, data_path: Optional[str] = None,
              cache_dir: Optional[str] = None, download: bool = False, progress: bool = True,
              sync_bn: Optional[bool] = None, wandb: bool = False,
              only: Optional[dict[str, set[str]]] = None, reuse: bool = True, log=print) -> SweepResult:
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
    distributed.on_main(lambda: check_writable(store_run_dir(results, spec.name, "x").parent), world)
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
        else:  # missing, partial (resumes), failed (retried: the cause may have been fixed)
            todo.append(row)
    log_plan(spec.name, profile, rows, pending, f"{len(todo)} to run", log)
    if not todo:
        mirror.close()
        return result

    gpus = _visible_gpus() if device in ("auto", "cuda") and jobs > 1 else []
    # The cores this process may use (its affinity: `taskset`, a SLURM allocation), not the machine's.
    threads = max(1, available_cpus() // jobs) if jobs > 1 else None
    # fit draws nothing itself: SweepProgress shows every job count alike, from the run directories.
    configs = [with_execution(r.run, device=device, threads=threads, data_path=data_path, cache_dir=cache_dir,
                              download=download, progress=False, sync_bn=sync_bn)
               for r in todo]
    check_amp(configs, where=spec.path)
    start = time.time()
    reported = [0]
    directories = {r.run.run_id: r.directory for r in todo}
    watch = SweepProgress(f"{spec.name} [{profile}]",
                          [(rc.run_id, f"{rc.run_id} {_labels(rc.labels)} seed {rc.seed}", rc.epochs,
                            directories[rc.run_id]) for rc in configs],
                          jobs=jobs, enabled=progress and world.is_main)
    log = watch.above(log)

    def begin(rc: RunConfig, status: str, slot: int) -> None:
        log(f"--> {rc.run_id}  {_labels(rc.labels)} seed {rc.seed} ({status})")
        watch.started(rc.run_id, slot, fresh=not has_checkpoint(directories[rc.run_id]))
        mirror.on_start(directories[rc.run_id])

    def end(rc: RunConfig, outcome: str, detail: str) -> None:
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
        log(f"[{reported[0]}/{len(todo)}] {outcome:8s} {rc.run_id}  {_labels(rc.labels)} seed {rc.seed}: {detail}"
            f"  ({time.time() - start:.0f}s elapsed)")

    with watch, mirror:
        if jobs <= 1:
            for rc, row in zip(configs, todo):
                begin(rc, row.status, 0)
                end(rc, *execute_one(rc, str(row.directory))[1:])
        else:
            _run_pooled(list(zip(configs, todo)), jobs, gpus, begin, end)
    return result


def _run_pooled(queue: list[tuple[RunConfig, PlanRow]], jobs: int, gpus: list[str], begin, end) -> None:
    """Run the queue on `jobs` single-process pools (one GPU each where there are GPUs). A worker that dies
    (killed, out of memory) fails only its run: its records stay for the next sweep to resume, and its
    slot gets a fresh pool for the runs still queued."""
    pools = make_pools(jobs, gpus)  # one process per job; with several GPUs each worker sees exactly one
    try:
        futures = {}
        free = list(range(jobs))[::-1]
        while queue or futures:
            while queue and free:
                j = free.pop()
                rc, row = queue.pop(0)
                begin(rc, row.status, j)
                futures[pools[j].submit(execute_one, rc, str(row.directory))] = (j, rc)
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
    finally:
        for p in pools:
            p.shutdown(cancel_futures=True)


def _visible_gpus() -> list[str]:
    try:
        import torch
        n = torch.cuda.device_count()
    except Exception:
        return []
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [s.strip() for s in env.split(",")] if env else [str(i) for i in range(n)]
    return ids[:n]


def _silent(*args, **kwargs) -> None:
    pass


def _labels(labels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "(base)"


def print_failures(result: SweepResult, out=sys.stderr) -> None:
    for run_id, reason in result.failed:
        print(f"FAILED {run_id}: {reason}", file=out)
