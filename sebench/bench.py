"""Cost of a model: parameters, FLOPs (multiply-adds), throughput and latency."""

from __future__ import annotations

import copy
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_size=(3, 224, 224)) -> int:
    """Multiply-adds for one image, the unit the SE paper calls FLOPs.

    torch's FlopCounterMode counts 2 FLOPs per multiply-add (matmul/conv); element-wise ops (the SE scale,
    ReLU, BN at inference) are not counted, as in the paper's figures.
    """
    was_training = model.training
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.zeros(1, *input_size, device=device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that host timers measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_steps(step: Callable[[], None], device: torch.device, warmup: int, iters: int) -> list[float]:
    """Seconds per call of `step` after `warmup` untimed calls; each timed call ends with a device sync,
    so the host clock covers the queued kernels."""
    for _ in range(warmup):
        step()
    synchronize(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def measure_throughput(model: nn.Module, *, input_size: Sequence[int], batch_size: int,
                       device: Union[str, torch.device] = "cpu", train: bool, warmup: int = 3,
                       iters: int = 10, channels_last: bool = False,
                       amp_dtype: Optional[torch.dtype] = None) -> dict:
    """Images per second at a fixed `batch_size` (never shrunk: too large a batch fails loudly).

    Runs on a copy of `model`, so its weights, BN statistics and memory format are untouched. Inference
    is a forward under inference_mode; training is forward + cross-entropy on random labels + backward +
    an SGD step. img_s is batch_size over the median batch time.
    """
    if iters < 1 or batch_size < 1:
        raise ValueError("iters and batch_size must be >= 1")
    device = torch.device(device)
    net = copy.deepcopy(model).to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(0)  # fixed input; leaves the global RNG alone
    x = torch.randn(batch_size, *input_size, generator=generator).to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    autocast = torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)

    if train:
        with torch.no_grad():
            num_classes = net.eval()(x[:1]).shape[1]
        y = torch.randint(0, num_classes, (batch_size,), generator=generator).to(device)
        net.train()
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

        def step() -> None:
            with autocast:
                loss = nn.functional.cross_entropy(net(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    else:
        net.eval()

        def step() -> None:
            with torch.inference_mode(), autocast:
                net(x)

    times = _timed_steps(step, device, warmup, iters)
    median = statistics.median(times)
    return {"img_s": batch_size / median, "ms_per_batch": 1e3 * median, "ms_min": 1e3 * min(times),
            "ms_max": 1e3 * max(times), "batch_size": batch_size, "device": str(device), "iters": iters,
            "warmup": warmup, "train": train, "input_size": list(input_size), "channels_last": channels_last,
            "amp_dtype": str(amp_dtype).removeprefix("torch.") if amp_dtype else None,
            "threads": torch.get_num_threads()}


def measure_latency(model: nn.Module, input_size: Sequence[int], device: Union[str, torch.device] = "cpu",
                    *, warmup: int = 10, iters: int = 50, channels_last: bool = False,
                    amp_dtype: Optional[torch.dtype] = None) -> dict:
    """Inference latency of one image: median ms over `iters` batch-1 forwards."""
    run = measure_throughput(model, input_size=input_size, batch_size=1, device=device, train=False,
                             warmup=warmup, iters=iters, channels_last=channels_last, amp_dtype=amp_dtype)
    return {"ms": run["ms_per_batch"], "ms_min": run["ms_min"], "ms_max": run["ms_max"], "batch_size": 1,
            "device": run["device"], "iters": iters, "warmup": warmup}


def benchmark(model: nn.Module, *, input_size: Sequence[int], batch_size: int,
              device: Union[str, torch.device], channels_last: bool = False,
              amp_dtype: Optional[torch.dtype] = None, warmup: int = 3, iters: int = 10) -> dict:
    """Parameters, FLOPs, train and inference throughput at `batch_size`, batch-1 latency, and what they
    were measured on."""
    from sebench.engine.env import device_name  # here, not at the top: sebench.engine imports this module

    device = torch.device(device)
    opts = dict(input_size=input_size, device=device, channels_last=channels_last, amp_dtype=amp_dtype,
                warmup=warmup, iters=iters)
    return {"params": count_params(model), "flops": count_flops(model, tuple(input_size)),
            "input_size": list(input_size), "batch_size": batch_size,
            "train": measure_throughput(model, batch_size=batch_size, train=True, **opts),
            "infer": measure_throughput(model, batch_size=batch_size, train=False, **opts),
            "latency": measure_latency(model, **opts),
            "device": str(device), "device_name": device_name(device), "torch": torch.__version__}


# ---- controlled re-measurement of stored runs -------------------------------------------------------------

def _signature(cfg, summary: dict) -> str:
    """What a run's speed depends on: its model (with SE and surgery), input and batch sizes, memory
    format and precision; not its seed, data order or epochs."""
    return json.dumps({"model": cfg.model.model_dump(mode="json"), "input_size": summary.get("input_size"),
                       "batch_size": cfg.batch_size, "infer_batch_size": cfg.benchmark.batch_size,
                       "channels_last": cfg.channels_last, "amp": cfg.amp}, sort_keys=True)


def remeasure_runs(run_dirs: Sequence, *, device: Union[str, torch.device] = "cpu", repeats: int = 5,
                   iters: int = 3, warmup: int = 2, log: Callable[[str], None] = print) -> list:
    """Training and inference throughput of the configurations behind finished runs, measured again
    here, all in one sitting: each distinct configuration (runs that differ only by seed share one) is
    built fresh (weights do not change the work), warmed up, then timed round-robin over `repeats`
    passes (the direction alternating), `iters` steps per pass, at the run's own training and benchmark
    batch sizes, memory format and precision. Writes ``speed.json`` into every run directory (median
    img/s over the passes, with min and max) and returns those paths.

    Why: a run's own ``train_img_s`` is measured while it trains, often beside other runs on the same
    cores, so the speeds of one table's runs are not comparable; these are.
    """
    from sebench.data import get_info
    from sebench.engine.env import device_name, now_iso
    from sebench.engine.fit import build_run_model
    from sebench.store import SPEED_FILE, atomic_write_json, read_finished_run

    if repeats < 1 or iters < 1:
        raise ValueError("repeats and iters must be >= 1")
    device = torch.device(device)
    groups: dict[str, list] = {}
    for run_dir in run_dirs:
        cfg, _, summary, _ = read_finished_run(run_dir)
        groups.setdefault(_signature(cfg, summary), []).append((Path(run_dir), cfg, summary))
    configs = []
    for members in groups.values():
        _, cfg, summary = members[0]
        num_classes = cfg.model.num_classes or get_info(cfg.data.name).num_classes or 1000
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp) if device.type == "cuda" else None
        configs.append({"members": members, "model": build_run_model(cfg, num_classes),
                        "input_size": tuple(summary["input_size"]), "channels_last": cfg.channels_last,
                        "amp": amp, "batch": {True: cfg.batch_size, False: cfg.benchmark.batch_size},
                        "img_s": {True: [], False: []},
                        "name": f"{members[0][0].name} ({cfg.model.name}, "
                                f"{'SE surgery' if cfg.model.surgery else summary.get('se') or 'no SE'})"})
    log(f"re-measuring {len(configs)} configuration(s) of {sum(len(g) for g in groups.values())} run(s) on "
        f"{device_name(device)}, {torch.get_num_threads()} thread(s): {repeats} repeats x {iters} steps")
    for r in range(repeats + 1):  # pass 0 only warms up (allocator, oneDNN/cuDNN kernel choice)
        for c in (configs if r % 2 == 0 else configs[::-1]):
            for train in (True, False):
                out = measure_throughput(c["model"], input_size=c["input_size"], batch_size=c["batch"][train],
                                         device=device, train=train, warmup=warmup if r == 0 else 1,
                                         iters=iters, channels_last=c["channels_last"], amp_dtype=c["amp"])
                if r > 0:
                    c["img_s"][train].append(out["img_s"])
        if r > 0:
            log(f"repeat {r}/{repeats} done")
    written = []
    common = {"repeats": repeats, "iters": iters, "configurations": len(configs), "device": str(device),
              "device_name": device_name(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "time": now_iso(),
              "method": "one sitting, round-robin over the configurations; per repeat, batch size / "
                        "median step time of `iters` steps; median, min and max over the repeats"}
    for c in configs:
        record = dict(common)
        for train, key in ((True, "train"), (False, "infer")):
            values = c["img_s"][train]
            record.update({f"{key}_img_s": statistics.median(values), f"{key}_img_s_min": min(values),
                           f"{key}_img_s_max": max(values), f"{key}_batch_size": c["batch"][train]})
        for run_dir, _, _ in c["members"]:
            atomic_write_json(run_dir / SPEED_FILE, record)
            written.append(run_dir / SPEED_FILE)
        log(f"{c['name']}: train {record['train_img_s']:.1f} img/s, infer {record['infer_img_s']:.1f} img/s")
    return written
