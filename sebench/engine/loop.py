"""One pass of training or evaluation over any iterable of (x, y) batches.

Used by `fit` with the in-memory loader and by benchmarks with a torchvision DataLoader alike: batches
that are not on the model's device are moved there. Statistics accumulate on the device and are read
back only at sync points (every step on CPU, every SYNC_EVERY steps on an accelerator), which is also
where a non-finite loss stops the pass.

Data-parallel (`world` with several processes): `model` is the DDP-wrapped network and `batches` this
rank's shard; the statistics returned are sums over all ranks (all_reduce), so every rank returns the
numbers of the global batches. The finiteness check then uses the summed loss at every sync point (every
SYNC_EVERY steps on any device), so all ranks stop at the same step.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Optional

import torch
from torch import nn

from sebench.bench import synchronize
from sebench.engine.distributed import World, all_reduce_sum


class RunFailed(RuntimeError):
    """Training cannot go on (a NaN/inf loss). `epoch` is set once the epoch is known."""

    def __init__(self, reason: str, epoch: Optional[int] = None):
        self.reason = reason
        self.epoch = epoch
        super().__init__(reason if epoch is None else f"epoch {epoch}: {reason}")


SYNC_EVERY = 50  # accelerator steps between host reads (finiteness check, on_step)

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _prepare(x: torch.Tensor, y: torch.Tensor, device: torch.device, channels_last: bool):
    if x.device != device:
        x = x.to(device, non_blocking=True)
    if y.device != device:
        y = y.to(device, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _autocast(device: torch.device, amp_dtype: Optional[torch.dtype]):
    return torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)


def train_epoch(model: nn.Module, batches: Batches, optimizer: torch.optim.Optimizer,
                scheduler: Optional[torch.optim.lr_scheduler.LRScheduler] = None, *,
                loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                scaler: Optional[torch.amp.GradScaler] = None, amp_dtype: Optional[torch.dtype] = None,
                channels_last: bool = False, on_step: Optional[Callable[[int, int], None]] = None,
                world: Optional[World] = None) -> dict:
    """Train for one pass over `batches`, stepping `scheduler` (per step) after every optimizer step.

    `loss_fn` must reduce by mean. `on_step(steps, images)` is called at every sync point with the steps
    and this process's images done so far (fit's heartbeat; it must be cheap).
    Returns {loss (sample mean), top1_err (%, on the training batches as seen), n, steps, seconds,
    img_s (n / seconds, data loading included), lr (of the last step)}. Raises RunFailed on a non-finite
    loss.
    """
    device = model_device(model)
    world = world or World()
    sync_every = 1 if device.type == "cpu" and not world.distributed else SYNC_EVERY
    model.train()
    loss_sum = torch.zeros((), device=device)
    wrong = torch.zeros((), device=device, dtype=torch.int64)
    n = steps = 0
    lr = optimizer.param_groups[0]["lr"]
    start = time.perf_counter()
    for x, y in batches:
        x, y = _prepare(x, y, device, channels_last)
        with _autocast(device, amp_dtype):
            out = model(x)
            loss = loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"]
        if scheduler is not None:
            scheduler.step()
        batch = y.shape[0]
        n += batch
        steps += 1
        loss_sum += loss.detach().float() * batch
        wrong += (out.detach().argmax(dim=1) != y).sum()
        if steps % sync_every == 0:
            _finite_mean(*_global(world, device, loss_sum, n), steps)
            if on_step is not None:
                on_step(steps, n)
    loss_total, n_total, wrong_total = _global(world, device, loss_sum, n, wrong)
    if n_total == 0:
        raise ValueError("train_epoch got no batches")
    mean = _finite_mean(loss_total, n_total, steps)
    synchronize(device)
    seconds = time.perf_counter() - start
    n_total = int(n_total)
    return {"loss": mean, "top1_err": 100.0 * int(wrong_total) / n_total, "n": n_total, "steps": steps,
            "seconds": seconds, "img_s": n_total / seconds, "lr": lr}


def _global(world: World, device: torch.device, *values) -> list:
    """The values themselves in one process; their sums over the ranks (as floats) in several."""
    if not world.distributed:
        return [v.item() if isinstance(v, torch.Tensor) else v for v in values]
    return all_reduce_sum(values, device, world)


def _finite_mean(loss_sum: float, n: float, steps: int) -> float:
    mean = loss_sum / n
    if not math.isfinite(mean):
        raise RunFailed(f"non-finite training loss ({mean}) by step {steps} of the epoch")
    return mean


def evaluate(model: nn.Module, batches: Batches, *,
             loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
             amp_dtype: Optional[torch.dtype] = None, channels_last: bool = False,
             world: Optional[World] = None) -> dict:
    """Loss (mean-reduced `loss_fn`, default plain cross-entropy) and top-1/top-5 error in percent.

    Top-5 is top-min(5, classes): with fewer than 5 classes every label is in the top k and the error
    is 0. The model's train/eval mode is restored afterwards. With a distributed `world`, `batches` is
    this rank's shard of the test set and the sums are taken over all ranks (pass the unwrapped model:
    a DDP forward would wait for the other ranks at every batch).
    """
    world = world or World()
    device = model_device(model)
    loss_fn = loss_fn or nn.functional.cross_entropy
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct1 = torch.zeros((), device=device, dtype=torch.int64)
    correct5 = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    with torch.inference_mode():
        for x, y in batches:
            x, y = _prepare(x, y, device, channels_last)
            with _autocast(device, amp_dtype):
                out = model(x)
            out = out.float()
            batch = y.shape[0]
            n += batch
            loss_sum += loss_fn(out, y) * batch
            hits = out.topk(min(5, out.shape[1]), dim=1).indices == y[:, None]
            correct1 += hits[:, 0].sum()
            correct5 += hits.any(dim=1).sum()
    model.train(was_training)
    loss_total, n_total, c1, c5 = _global(world, device, loss_sum, n, correct1, correct5)
    if n_total == 0:
        raise ValueError("evaluate got no batches")
    n_total, c1, c5 = int(n_total), int(c1), int(c5)
    return {"loss": loss_total / n_total, "top1_err": 100.0 * (n_total - c1) / n_total,
            "top5_err": 100.0 * (n_total - c5) / n_total, "n": n_total}
