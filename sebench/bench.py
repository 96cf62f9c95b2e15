"""Cost of a model: parameters, FLOPs (multiply-adds), throughput and latency."""

from __future__ import annotations

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
