"""`fit`: train and evaluate one RunConfig, writing its records into the run directory.

run_dir/
  config.yaml    the RunConfig (plus run_id), rewritten at every start
  env.json       versions, git state, hardware, threads, data label, execution block, the settings that
                 change numbers (`settings`); resumes appended, a resume under other settings warns
  metrics.jsonl  one line per finished epoch (errors in percent)
  ckpt/          last.pt and prev.pt (see checkpoint.py)
  summary.json   written last: status 'finished' with final-epoch numbers, or 'failed' with the reason

Resume is automatic and exact: model, optimizer, scheduler, scaler and every global RNG come back from
the newest readable checkpoint, the loader's randomness depends only on (seed, epoch), and metric lines
after the checkpoint's epoch are dropped. On CPU with deterministic settings a run killed after epoch k
ends bitwise equal to one never interrupted. A metrics line is appended before its checkpoint, so a kill
between the two only repeats that epoch.

Data-parallel (launched by torchrun, `sebench run --launcher torchrun`, or a multi-GPU SLURM task): the
same function runs in every process of the initialised process group; see engine/distributed.py. The
model is wrapped in DDP (optionally with SyncBatchNorm), each rank loads its share of every global
batch, evaluation sums over ranks, and only rank 0 writes the run directory. Decisions that read the
store are taken by rank 0 and broadcast. A checkpoint holds every rank's RNG state, so a data-parallel
run killed and resumed with the same process count is exact too.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from sebench.bench import count_flops, count_params, measure_throughput
from sebench.data import build_loaders
from sebench.engine import checkpoint, distributed
from sebench.engine.builders import Training, build_run_model, build_training, place, resolve_amp, resolve_device
from sebench.engine.distributed import World
from sebench.engine.env import available_cpus, collect_env, cpu_bf16_flag, now_iso
from sebench.engine.loop import RunFailed, evaluate, train_epoch
from sebench.errors import UserError
from sebench.spec import DataCfg, ExecutionCfg, RunConfig
from sebench.records import RunSummary
from sebench.store import (RunDir, append_jsonl, atomic_write_json, clear_progress, read_jsonl, write_jsonl,
                           write_progress, write_run_config)

# cuBLAS needs a fixed workspace for deterministic GEMMs; see PyTorch's reproducibility notes.
CUBLAS_DETERMINISTIC = ":4096:8"
HEARTBEAT_S = 2.0  # seconds between heartbeat writes within an epoch (the progress display polls every 1 s)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every CUDA device too


@contextmanager
def process_settings(execution: ExecutionCfg, device: torch.device,
                     default_threads: Optional[int] = None) -> Iterator[int]:
    """Threads and determinism for the run; the caller's settings come back afterwards.

    CUBLAS_WORKSPACE_CONFIG is read by cuBLAS when this process creates its first handle, so setting it
    here only works if nothing has used cuBLAS yet; a process that did so earlier gets a warning, and
    launchers (CLI, runner) should set it at process start.
    """
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic, torch.utils.deterministic.fill_uninitialized_memory)
    threads = execution.threads or default_threads or available_cpus()
    torch.set_num_threads(threads)
    if execution.deterministic:
        if device.type == "cuda" and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
            if torch.cuda.is_initialized():
                warnings.warn("CUDA was initialised before fit set CUBLAS_WORKSPACE_CONFIG; matmuls may "
                              f"not be deterministic (export CUBLAS_WORKSPACE_CONFIG={CUBLAS_DETERMINISTIC}"
                              " before starting Python)", RuntimeWarning, stacklevel=3)
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic mode also fills every new tensor with NaN, a guard against kernels that read memory
        # they did not write; none of ours does (a run's numbers are the same bit for bit either way,
        # tested), and the fills cost ResNet-20 about 12% of a CPU training step.
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    try:
        yield threads
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[3], saved[4]
        torch.utils.deterministic.fill_uninitialized_memory = saved[5]


def _finished_summary(run_dir: Path, run_id: str) -> Optional[RunSummary]:
    run = RunDir(run_dir)
    summary = run.read_summary()  # a damaged one: UserError naming the file, "delete it to resume"
    if summary is None:
        return None
    if summary.run_id != run_id:
        raise UserError(f"directory holds run {summary.run_id!r}, not {run_id!r}", where=str(run.summary),
                        field="run_id", fix="give each run its own directory (store.RunDir.of)")
    return summary if summary.finished else None


def _check_distributed(cfg: RunConfig, world: World, device: torch.device) -> None:
    """What a data-parallel run needs (the same answer on every rank: it depends on cfg and world only)."""
    if not world.distributed:
        return
    if cfg.batch_size % world.size:
        raise UserError(f"the global batch of {cfg.batch_size} does not split evenly over {world.size} "
                        "processes", field="batch_size",
                        fix=f"use a batch size divisible by {world.size}, or another process count")
    if cfg.execution.sync_bn and device.type != "cuda":
        raise UserError("SyncBatchNorm needs CUDA (PyTorch has no CPU kernel for it)", field="execution.sync_bn",
                        fix="turn it off for CPU runs: each process then normalises with its share of the batch")


def _input_size(model: nn.Module, data: DataCfg, native_size: int) -> tuple[int, int, int]:
    """(C, H, W) of the images the model is trained on: the data's size (resized or native), which is
    not the model's default when, e.g., an ImageNet ResNet trains on 32x32 CIFAR."""
    size = data.image_size or native_size
    return model.input_size[0], size, size


def _metrics_before(path: Path, start_epoch: int) -> list[dict]:
    """Rewrite the epoch log to the epochs before `start_epoch` (a resume repeats the later ones) and
    return them; a log missing some of those epochs cannot give honest summary numbers."""
    records = [r for r in read_jsonl(path) if r["epoch"] < start_epoch]
    if [r["epoch"] for r in records] != list(range(1, start_epoch)):
        raise UserError(f"the log lacks epochs the checkpoint has trained (1..{start_epoch - 1})",
                        where=str(path), fix="delete the run's ckpt directory to train it again from epoch 1")
    write_jsonl(path, records)
    return records


class ResumeSettingsChanged(RuntimeWarning):
    """A run resumed under other execution settings than its previous start: its numbers will not be
    bitwise those of an uninterrupted run."""


# The execution settings that change a run's numbers, in the order a change is named.
SETTINGS = ("threads", "world_size", "device", "machine", "amp", "cpu_bf16", "channels_last")


def _write_env(path: Path, env: dict, resumed_from: Optional[int], run_id: str = "") -> Optional[str]:
    """env.json describes the first start; each resume appends its own record under 'resumes'. Returns
    the line naming the execution settings a resume changed since the previous start (else None)."""
    record, changed = env, None
    if resumed_from is not None and path.exists():
        try:
            first = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            first = None
        if isinstance(first, dict):
            previous = ([first, *first.get("resumes", [])][-1]).get("settings")
            changed = _settings_change(run_id, previous, env.get("settings"))
            record = {**first, "resumes": [*first.get("resumes", []), {"from_epoch": resumed_from, **env}]}
    atomic_write_json(path, record)
    return changed


def _settings_change(run_id: str, was: Optional[dict], now: Optional[dict]) -> Optional[str]:
    """One line naming what differs between two starts' settings; None when nothing does (or a record,
    written before settings were recorded, has none to compare)."""
    if not isinstance(was, dict) or not isinstance(now, dict):
        return None
    diffs = [f"{k.replace('_', ' ')} {now.get(k)} (was {was.get(k)})" for k in SETTINGS
             if k in was and was.get(k) != now.get(k)]
    if not diffs:
        return None
    return (f"resuming run {run_id} with {', '.join(diffs)}: its numbers will not be bitwise those of an "
            "uninterrupted run")


def _run_fields(cfg: RunConfig, dataset: str) -> dict:
    return {"run_id": cfg.run_id, "experiment": cfg.experiment, "profile": cfg.profile,
            "labels": dict(cfg.labels), "model": cfg.model.name,
            "se": cfg.model.se.short() if cfg.model.se is not None else "none",
            "se_stages": list(cfg.model.se_stages) if cfg.model.se_stages is not None else None,
            "dataset": dataset, "seed": cfg.seed, "epochs": cfg.epochs, "batch_size": cfg.batch_size}


def fit(cfg: RunConfig, run_dir: Union[str, os.PathLike], *, notices: Optional[list[str]] = None) -> RunSummary:
    """Train `cfg` in `run_dir` (resuming if it holds a checkpoint) and return its summary.

    A resume under other execution settings (threads, processes, device, machine, precision) than the
    previous start warns (ResumeSettingsChanged) and appends the line to `notices` for the caller to pass on.

    A run whose summary says finished is returned without training. A NaN/inf loss writes a 'failed'
    summary (epoch, reason) and raises RunFailed; calling fit again retries from the last checkpoint.
    Inside an initialised process group every rank calls fit and gets the same summary back.
    """
    world = distributed.current()
    run_dir = Path(run_dir)
    finished = distributed.on_main(lambda: _finished_summary(run_dir, cfg.run_id), world)
    if finished is not None:
        return finished
    device = resolve_device(cfg.execution.device, world)
    resolve_amp(cfg.amp, device)  # a refused autocast dtype ends here, before anything is written
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    _check_distributed(cfg, world, device)
    default_threads = max(1, available_cpus() // world.local_size) if world.distributed else None
    with process_settings(cfg.execution, device, default_threads) as threads:
        try:
            return _train(cfg, run_dir, device, threads, world, notices)
        finally:  # the heartbeat means something only while the run trains
            if world.is_main:
                clear_progress(run_dir)


def _heartbeat(run_dir: Path, epoch: int, epochs: int, steps: int, world_size: int):
    """train_epoch's on_step: where the run is within `epoch` (store.write_progress, at most every
    HEARTBEAT_S seconds), so that a sweep's progress display (sebench.progress) moves between epochs."""
    start = time.perf_counter()
    last = start - HEARTBEAT_S  # the first step writes at once

    def beat(step: int, images: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if now - last >= HEARTBEAT_S or step == steps:
            last = now
            write_progress(run_dir, {"epoch": epoch, "epochs": epochs, "step": step, "steps": steps,
                                     "img_s": images * world_size / (now - start), "elapsed": now - start,
                                     "time": time.time()})
    return beat


def _load_state(ckpt_dir: Path, run_id: str, world: World, device: torch.device) -> Optional[dict]:
    """The checkpoint to resume from: rank 0 picks the newest readable file (see checkpoint.latest) and
    every other rank reads that same file."""
    if not world.distributed:
        return checkpoint.load_latest(ckpt_dir, run_id)
    picked: dict = {}

    def pick() -> Optional[str]:
        picked["state"], path = checkpoint.latest(ckpt_dir, run_id)
        return None if path is None else path.name

    name = distributed.on_main(pick, world)
    if name is None:
        return None
    state = picked["state"] if world.is_main else checkpoint.read(ckpt_dir / name)
    readable = distributed.all_reduce_sum([state is not None], device, world)[0]
    if readable < world.size:  # e.g. a shared file system that has not shown another node the file yet
        raise UserError(f"{world.size - int(readable)} process(es) could not read the checkpoint rank 0 "
                        "resumes from", where=str(ckpt_dir / name), fix="run again; check the file system")
    return state


def _restore_rng(state: dict, cfg: RunConfig, world: World) -> None:
    """Every rank's RNG streams as they were at the checkpoint (exact when the process count is the
    same; otherwise rank 0 continues its stream and the others start fresh ones)."""
    ranks = state.get("rng_ranks")
    if ranks and len(ranks) == world.size:
        checkpoint.restore_rng(ranks[world.rank])
        return
    if world.rank == 0:
        checkpoint.restore_rng(state["rng"])
    else:
        seed_everything(distributed.rank_seed(cfg.seed, world.rank, state["epoch"]))
    written_by = len(ranks) if ranks else 1
    if world.distributed and world.is_main and written_by != world.size:
        warnings.warn(f"resuming a checkpoint of {written_by} process(es) with {world.size}: random streams "
                      "(dropout) differ from an uninterrupted run", RuntimeWarning, stacklevel=3)


def _train(cfg: RunConfig, run_dir: Path, device: torch.device, threads: int, world: World,
           notices: Optional[list[str]] = None) -> dict:
    ex = cfg.execution
    main = world.is_main
    seed_everything(cfg.seed)
    loaders = build_loaders(cfg.data, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
                            device=device, seed=cfg.seed, path=ex.data_path, cache_dir=ex.cache_dir,
                            num_workers=ex.num_workers, download=ex.download, rank=world.rank,
                            world_size=world.size)
    model = place(build_run_model(cfg, loaders.num_classes), cfg, device)
    input_size = _input_size(model, cfg.data, loaders.info.image_size)
    params, flops = count_params(model), count_flops(model, input_size)
    if world.distributed:
        if ex.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if world.rank > 0:  # the same initial weights (DDP also broadcasts rank 0's), own dropout streams
            seed_everything(distributed.rank_seed(cfg.seed, world.rank))
    tr = build_training(cfg, model, len(loaders.train), device)
    optimizer, scheduler, scaler, amp_dtype = tr.optimizer, tr.scheduler, tr.scaler, tr.amp_dtype

    ckpt_dir = RunDir(run_dir).ckpt
    state = _load_state(ckpt_dir, cfg.run_id, world, device)
    start_epoch = 1
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = state["epoch"] + 1
    metrics_path = RunDir(run_dir).metrics
    records = distributed.on_main(lambda: _metrics_before(metrics_path, start_epoch), world)
    env = {**collect_env(device, threads), "run_id": cfg.run_id, "data": loaders.label,
           "data_source": loaders.source,
           "amp": {"requested": cfg.amp, "used": tr.amp_used,
                   "cpu_flag": cpu_bf16_flag() if device.type == "cpu" and amp_dtype is not None else None},
           "execution": ex.model_dump(mode="json"),
           "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "world_size": world.size,
           "distributed": ({"backend": torch.distributed.get_backend(), "local_world_size": world.local_size,
                            "sync_bn": ex.sync_bn} if world.distributed else None)}
    # What changes a run's numbers besides its config: recorded at every start, compared at each resume.
    env["settings"] = {"threads": threads, "world_size": world.size, "device": str(device),
                       "machine": env["device_name"], "amp": tr.amp_used, "cpu_bf16": env["amp"]["cpu_flag"],
                       "channels_last": cfg.channels_last}
    if main:
        write_run_config(run_dir, cfg)
        changed = _write_env(RunDir(run_dir).env, env, state["epoch"] if state is not None else None, cfg.run_id)
        if changed:
            warnings.warn(changed, ResumeSettingsChanged, stacklevel=3)
            if notices is not None:
                notices.append(changed)

    if state is not None:
        _restore_rng(state, cfg, world)  # last, so nothing above shifts the streams
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        net = torch.compile(ddp) if ex.compile else ddp
        # Evaluation runs on each rank's shard with the plain module: a DDP forward would synchronise
        # buffers with the other ranks at every batch, and the shards differ in length.
        eval_net = torch.compile(model) if ex.compile else model
    else:
        net = eval_net = torch.compile(model) if ex.compile else model
    fields = _run_fields(cfg, loaders.label)
    for epoch in range(start_epoch, cfg.epochs + 1):
        loaders.train.set_epoch(epoch)
        started = time.perf_counter()
        beat = _heartbeat(run_dir, epoch, cfg.epochs, len(loaders.train), world.size) if main else None
        try:
            train = train_epoch(net, loaders.train, optimizer, scheduler, loss_fn=tr.loss_fn, scaler=scaler,
                                amp_dtype=amp_dtype, channels_last=cfg.channels_last, on_step=beat,
                                world=world)
            distributed.broadcast_buffers(model, world)  # every rank evaluates rank 0's model
            # Test loss is plain cross-entropy: label smoothing is a training device, not the metric.
            test = evaluate(eval_net, loaders.test, amp_dtype=amp_dtype, channels_last=cfg.channels_last,
                            world=world)
            if not math.isfinite(test["loss"]):
                raise RunFailed(f"non-finite test loss ({test['loss']})")
        except RunFailed as exc:
            if main:
                RunDir(run_dir).write_summary(RunSummary(status="failed", **fields, epoch=epoch, reason=exc.reason,
                                                         time=now_iso()))
            raise RunFailed(exc.reason, epoch=epoch) from None
        record = {"epoch": epoch, "train_loss": train["loss"], "train_top1_err": train["top1_err"],
                  "test_loss": test["loss"], "test_top1_err": test["top1_err"],
                  "test_top5_err": test["top5_err"], "lr": train["lr"], "train_img_s": train["img_s"],
                  "epoch_s": time.perf_counter() - started, "time": time.time()}
        records.append(record)
        rng_ranks = distributed.gather_objects(checkpoint.capture_rng(), world) if world.distributed else None
        if main:
            append_jsonl(metrics_path, record)
            state = {"epoch": epoch, "run_id": cfg.run_id, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "scaler": scaler.state_dict() if scaler is not None else None,
                     "rng": rng_ranks[0] if rng_ranks else checkpoint.capture_rng()}
            if rng_ranks:
                state["rng_ranks"] = rng_ranks
            checkpoint.save_checkpoint(ckpt_dir, state)
        if ex.progress and main:
            tqdm.write(f"[{cfg.run_id}] epoch {epoch}/{cfg.epochs}: train loss {train['loss']:.4f}, "
                       f"test top-1 err {test['top1_err']:.2f}%, lr {train['lr']:.4g}, "
                       f"{train['img_s']:.0f} img/s, {record['epoch_s']:.1f} s", file=sys.stderr)

    done = _Trained(cfg, run_dir, model, records, input_size, params, flops, device, threads, env, tr, fields)
    return distributed.on_main(lambda: _finish(done), world)


@dataclass
class _Trained:
    """What _finish needs of a trained run."""

    cfg: RunConfig
    run_dir: Path
    model: nn.Module
    records: list[dict]
    input_size: tuple[int, int, int]
    params: int
    flops: int
    device: torch.device
    threads: int
    env: dict
    training: Training
    fields: dict


def _finish(run: _Trained) -> RunSummary:
    """Measure inference throughput and write the summary (rank 0 of a data-parallel run)."""
    cfg, env, final = run.cfg, run.env, run.records[-1]
    # Inference throughput of the trained model at the spec's benchmark batch size (recorded with it).
    infer = measure_throughput(run.model, input_size=run.input_size, batch_size=cfg.benchmark.batch_size,
                               device=run.device, train=False, warmup=cfg.benchmark.warmup,
                               iters=cfg.benchmark.iters, channels_last=cfg.channels_last,
                               amp_dtype=run.training.amp_dtype)
    summary = RunSummary(
        status="finished", **run.fields,
        final_test_top1_err=final["test_top1_err"], final_test_top5_err=final["test_top5_err"],
        final_test_loss=final["test_loss"], final_train_loss=final["train_loss"],
        params=run.params, flops=run.flops, input_size=list(run.input_size),
        # Mean over all epochs of this run, including those trained before a resume.
        train_img_s=float(np.mean([r["train_img_s"] for r in run.records])),
        wall_s=float(sum(r["epoch_s"] for r in run.records)),  # training + evaluation, no setup
        infer_img_s=infer["img_s"], infer_batch_size=cfg.benchmark.batch_size,
        data_source=env["data_source"],
        device=str(run.device), device_name=env["device_name"], threads=run.threads,
        world_size=env["world_size"],
        amp=run.training.amp_used, channels_last=cfg.channels_last,
        torch=env["versions"]["torch"], timm=env["versions"]["timm"],
        git_commit=env["git"]["commit"], time=now_iso())
    RunDir(run.run_dir).write_summary(summary)
    if cfg.execution.progress:
        print(f"[{cfg.run_id}] finished: {run.run_dir}", file=sys.stderr)
    return summary
