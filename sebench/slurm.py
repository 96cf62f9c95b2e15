"""`sebench run --launcher slurm`: a sweep as one SLURM job array, through submitit (optional dependency,
imported only here: `pip install 'sebench[slurm]'`).

* Each array task executes one run with runner.execute_one, exactly as a local sweep does: the run's lock
  file, resume from its newest checkpoint, a finished run returned without training. What is finished
  or running elsewhere when you submit is not submitted.
* A run gets nodes x gpus_per_node processes (one per GPU; tasks_per_node = gpus_per_node); with more than
  one, the task joins a process group (MASTER_ADDR/PORT from submitit's TorchDistributedEnvironment) and
  trains data-parallel (engine/distributed.py).
* Preemption and time limits: submitit signals the job before SLURM stops it and calls
  RunTask.checkpoint(), which returns the same task; submitit requeues it, and the requeued task resumes
  the run from its last end-of-epoch checkpoint (fit always resumes). The lock the preempted attempt
  left is recognised by the SLURM job id, which a requeued job keeps, and taken over.
* `cluster='local'` runs the same array on this machine (submitit's LocalExecutor): what the tests use,
  and a dry run before a cluster submission.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from sebench.errors import UserError
from sebench.spec import RunConfig, SlurmCfg, Spec

CLUSTERS = ("slurm", "local", "debug")


def require_submitit():
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit, which is not installed", where="--launcher",
                        fix="pip install 'sebench[slurm]' (submitit==1.5.4)") from None
    return submitit


class RunTask:
    """One array task: one run. A callable class, so submitit can checkpoint and requeue it."""

    def __init__(self, rc: RunConfig, directory: str):
        self.rc = rc
        self.directory = directory

    def __call__(self) -> tuple[str, str, str]:
        from sebench.engine import distributed
        from sebench.engine.builders import device_kind
        from sebench.runner import execute_one

        _export_torch_distributed_env()
        with distributed.process_group(device_kind(self.rc.execution.device)):
            return execute_one(self.rc, self.directory)

    def checkpoint(self, *args: Any, **kwargs: Any):
        """Called by submitit on preemption or timeout: requeue this same run. Nothing needs saving here:
        fit checkpoints every epoch and the requeued task resumes from there."""
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(RunTask(self.rc, self.directory))

    def __repr__(self) -> str:
        return f"RunTask({self.rc.run_id}, {self.directory})"


def _export_torch_distributed_env() -> None:
    """Inside a submitit job with several tasks, export RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/PORT for
    torch.distributed's env:// rendezvous (every task sees all of its node's GPUs; LOCAL_RANK picks one)."""
    try:
        import submitit

        env = submitit.JobEnvironment()
    except Exception:  # not in a submitit job (called directly): one process
        return
    if env.num_tasks > 1:
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)


def resolve_slurm(spec: Spec, overrides: dict) -> SlurmCfg:
    """The spec's `slurm:` section with the CLI's options (those not None) on top."""
    base = spec.slurm.model_dump() if spec.slurm is not None else {}
    merged = {**base, **{k: v for k, v in overrides.items() if v is not None}}
    from pydantic import ValidationError

    try:
        return SlurmCfg(**merged)
    except ValidationError as exc:
        e = exc.errors()[0]
        name = str(e["loc"][0]) if e["loc"] else "slurm"
        raise UserError(e["msg"], where=f"--{name.replace('_', '-')}", field=f"slurm.{name}") from None


def executor_parameters(cfg: SlurmCfg, name: str) -> dict:
    """submitit AutoExecutor parameters for one run per array task."""
    params: dict[str, Any] = {
        "name": name, "timeout_min": cfg.time, "nodes": cfg.nodes,
        "tasks_per_node": max(1, cfg.gpus_per_node), "gpus_per_node": cfg.gpus_per_node,
        "slurm_array_parallelism": cfg.array_parallelism,
    }
    if cfg.cpus_per_task is not None:
        params["cpus_per_task"] = cfg.cpus_per_task
    if cfg.mem_gb is not None:
        params["mem_gb"] = cfg.mem_gb
    for key in ("partition", "account", "qos", "constraint"):
        value = getattr(cfg, key)
        if value is not None:
            params[f"slurm_{key}"] = value
    return params


@dataclass
class Submission:
    jobs: list = field(default_factory=list)  # submitit Job objects, one per run
    runs: list[RunConfig] = field(default_factory=list)
    folder: Optional[Path] = None
    skipped: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)  # adopted before submitting (runner.reuse_identical)


def submit_sweep(spec: Spec, profile: str, results: Path, slurm: SlurmCfg, *, cluster: str = "slurm",
                 folder: Optional[Path] = None, overrides: Optional[dict] = None, device: str = "auto",
                 data_path: Optional[str] = None, cache_dir: Optional[str] = None, download: bool = False,
                 sync_bn: Optional[bool] = None, only: Optional[dict[str, set[str]]] = None,
                 reuse: bool = True, log: Callable[[str], None] = print) -> Submission:
    """Submit every run that is not finished (or running elsewhere) as one job array."""
    from sebench.runner import check_data_parallel, log_plan, reuse_identical, todo_rows, with_execution
    from sebench.store import RunDir, check_writable

    if cluster not in CLUSTERS:
        raise UserError(f"unknown cluster {cluster!r}", where="--cluster", fix=f"allowed: {', '.join(CLUSTERS)}")
    submitit = require_submitit()
    missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None] if cluster == "slurm" else []
    if missing:
        raise UserError(f"SLURM's {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not on PATH",
                        where="--launcher slurm",
                        fix="submit from a SLURM login node, or try the array here with --cluster local")
    check_writable(RunDir.of(results, spec.name, "x").path.parent)
    rows, todo, pending = todo_rows(spec, profile, results, overrides, only)
    if reuse:  # adopted here, before submitting: an identical finished run needs no job
        reuse_identical(todo, results, log)
        todo = [r for r in todo if r.status != "reused"]
    sub = Submission(skipped=[r.run.run_id for r in rows if r.status == "finished"],
                     locked=[r.run.run_id for r in rows if r.status == "locked"],
                     reused=[r.run.run_id for r in rows if r.status == "reused"])
    log_plan(spec.name, profile, rows, pending, f"{len(todo)} to submit", log)
    if not todo:
        return sub
    # On the cluster's nodes, not here: 'auto' is the device the task finds (CPU when gpus_per_node is 0).
    from sebench.engine.builders import device_kind

    check_data_parallel([r.run for r in todo], slurm.nodes * max(1, slurm.gpus_per_node),
                        device_kind(device, cuda_available=bool(slurm.gpus_per_node)), sync_bn,
                        where="--gpus-per-node")
    sub.folder = Path(folder) if folder is not None else Path(results) / "slurm" / spec.name
    executor = submitit.AutoExecutor(folder=sub.folder / "%j", cluster=cluster)
    executor.update_parameters(**executor_parameters(slurm, f"sebench-{spec.name}"))
    sub.runs = [with_execution(r.run, device=device, data_path=data_path, cache_dir=cache_dir,
                               download=download, progress=False, sync_bn=sync_bn) for r in todo]
    with executor.batch():
        for rc, row in zip(sub.runs, todo):
            sub.jobs.append(executor.submit(RunTask(rc, str(row.directory))))
    ids = sorted({str(j.job_id).split("_")[0] for j in sub.jobs})
    log(f"submitted {len(sub.jobs)} run(s) as job {', '.join(ids)} ({cluster}); logs: {sub.folder}")
    return sub


def wait(sub: Submission, log: Callable[[str], None] = print):
    """Wait for every job; the sweep's outcome as a runner.SweepResult."""
    from sebench.runner import SweepResult

    result = SweepResult(skipped=list(sub.skipped), locked=list(sub.locked), reused=list(sub.reused))
    for rc, job in zip(sub.runs, sub.jobs):
        try:
            run_id, outcome, detail = job.result()
        except Exception as exc:  # the task raised, was cancelled, or timed out for good
            last = (str(exc).strip().splitlines() or [""])[-1]  # submitit's message ends with the cause
            run_id, outcome, detail = rc.run_id, "failed", f"job {job.job_id}: {type(exc).__name__}: {last}"
        if outcome == "finished":
            result.finished.append(run_id)
        elif outcome == "locked":
            result.locked.append(run_id)
        else:
            result.failed.append((run_id, detail))
        log(f"{outcome:8s} {run_id} (job {job.job_id}): {detail}")
    return result
