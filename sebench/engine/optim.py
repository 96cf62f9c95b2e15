"""Optimizers and learning-rate schedules, as the sources' recipes define them.

Schedules are one per-step LambdaLR (``scheduler.step()`` after every optimizer step), so checkpoints
hold one counter and resume lands on the exact step. Within that clock:

* ``multistep`` and ``step`` change at epoch boundaries, as in the papers (He et al. CIFAR: /10 at 50%
  and 75% of the epochs; arXiv 2304.06502's CNN: x0.7 every epoch). A multistep milestone f applies from
  the first epoch e (0-based) with e / epochs >= f, so 0.5 of 10 epochs decays from the 6th epoch on
  and 0.75 of 10 from the 9th (epoch 7.5 rounds up to the next boundary).
* ``cosine`` anneals to 0 over the run, step-wise: factor 0.5 * (1 + cos(pi * s / total_steps)).
* linear warm-up multiplies any of them: factor min(1, (s + 1) / warmup_steps), warmup_steps =
  round(warmup_epochs * steps_per_epoch) (at least 1), so the first step already moves (lr / warmup_steps)
  and the curve is continuous where warm-up ends.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from sebench.spec import OptimCfg


def param_groups(model: nn.Module, weight_decay: float, exclude_bn_bias: bool) -> list[dict]:
    """One group with decay; with `exclude_bn_bias`, tensors of ndim <= 1 (BN scales/shifts and every
    bias) go to a second group without decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not exclude_bn_bias:
        return [{"params": params, "weight_decay": weight_decay}]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimCfg) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay, cfg.wd_exclude_bn_bias)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # OptimCfg's Literal makes this unreachable


def lr_factor(cfg: OptimCfg, epochs: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of the base lr for optimizer step s (0-based), see the module docstring."""
    if steps_per_epoch < 1:
        raise ValueError("steps_per_epoch must be >= 1 (is the training set empty?)")
    total_steps = epochs * steps_per_epoch
    warmup_steps = max(1, round(cfg.warmup_epochs * steps_per_epoch)) if cfg.warmup_epochs > 0 else 0

    def schedule(step: int) -> float:
        epoch = step // steps_per_epoch
        if cfg.schedule == "multistep":
            # e / epochs >= f compares exactly when f is a decimal fraction of the epochs (0.1 of 30).
            return cfg.gamma ** sum(epoch / epochs >= f for f in cfg.milestones)
        if cfg.schedule == "step":
            return cfg.gamma ** (epoch // cfg.step_epochs)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
        return 1.0  # constant

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
        return schedule(step) * warm

    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimCfg, epochs: int,
                    steps_per_epoch: int) -> LambdaLR:
    """Per-step scheduler: call ``.step()`` after every optimizer step."""
    return LambdaLR(optimizer, lr_factor(cfg, epochs, steps_per_epoch))
