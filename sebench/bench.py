"""Cost of a model: parameters, FLOPs (multiply-adds), throughput and latency, and the device they were
measured on. The bottom floor of measuring: it takes an nn.Module and imports nothing of the engine or the
store (re-measuring stored runs is sebench.speed)."""

from __future__ import annotations

import copy
import platform
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


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


# The widest vector/matrix extension a CPU offers, strongest first. A VM's model name can hide the
# generation ("AMD EPYC" was both an AVX2-only part and an AVX-512 one twice as fast here), and the
# extension decides which oneDNN kernels run, so the device name carries it.
CPU_ISAS = ("amx_bf16", "avx512_bf16", "avx512f", "avx2")


def cpu_flags(cpuinfo: Optional[str] = None) -> frozenset[str]:
    """The CPU's feature flags (the first 'flags' line of /proc/cpuinfo unless given); empty if unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_isa(cpuinfo: Optional[str] = None) -> Optional[str]:
    """The first of CPU_ISAS among the CPU's flags, or None."""
    flags = cpu_flags(cpuinfo)
    return next((isa for isa in CPU_ISAS if isa in flags), None)


def device_name(device: torch.device | str) -> str:
    """The GPU's name, or the CPU's model name with its widest extension, e.g. 'AMD EPYC [avx512_bf16]'
    (records before 2026-12-02 have the model name alone)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        isa = cpu_isa()
        return f"{cpu_name()} [{isa}]" if isa else cpu_name()
    return device.type


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
    device = torch.device(device)
    opts = dict(input_size=input_size, device=device, channels_last=channels_last, amp_dtype=amp_dtype,
                warmup=warmup, iters=iters)
    return {"params": count_params(model), "flops": count_flops(model, tuple(input_size)),
            "input_size": list(input_size), "batch_size": batch_size,
            "train": measure_throughput(model, batch_size=batch_size, train=True, **opts),
            "infer": measure_throughput(model, batch_size=batch_size, train=False, **opts),
            "latency": measure_latency(model, **opts),
            "device": str(device), "device_name": device_name(device), "torch": torch.__version__}
