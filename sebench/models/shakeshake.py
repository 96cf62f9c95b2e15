"""Shake-Shake 26 2x96d (Gastaldi 2017, "Shake-Shake regularization") and SE-Shake-Shake, CIFAR-10.

A 3-stage ResNet of depth 26 (4 blocks per stage, 2 convs per branch: 2 + 3 * 4 * 2 = 26), each residual
block with two branches of ReLU -> conv 3x3 -> BN -> ReLU -> conv 3x3 -> BN; "2x96d": two branches, 96
channels in the first stage (then 192 and 384, each stage's first block striding by 2 from the second stage
on). Stem: conv 3x3 (16) -> BN; head: ReLU -> global average pool -> linear. 26.2M parameters (Gastaldi:
26.2M).

Shake-Shake-Image, the paper's best CIFAR-10 setting ("Shake-Shake" in its table: shake forward, shake
backward, per image): in training the block computes x + alpha * b1(x) + (1 - alpha) * b2(x) with alpha ~
U(0, 1) drawn per image at each forward pass, and its backward pass weighs the branches' gradients by an
independent beta ~ U(0, 1) (beta, 1 - beta) per image; at test time alpha = 0.5. ``shake=('even',)``-style
variants are not built: only the row's setting. The draws use the global torch RNG (the model's, seeded by
the engine), so a run is reproducible.

Shortcut where the width changes (every stage's first block, the first stage's too: 16 -> 96): Gastaldi's
"strided, concatenated" shortcut: ReLU, then two paths, one taking the even pixels (1x1 average pool with
the block's stride) and one the odd pixels (shifted by one, zero padded), each through a 1x1 conv to half
the width, concatenated and batch-normalised. Other blocks add the identity.

SE-Shake-Shake (SE paper, source 003, CIFAR-10 table): the sources do not say where the SE module goes in a
two-branch block. Our reading, that of SE-ResNet and SE-ResNeXt (SE recalibrates the residual function's
output before it is added to the identity; ResNeXt's branches are aggregated first): one SE module per
block on the shaken mixture alpha * b1 + (1 - alpha) * b2, before the addition (SE_<stage>_<block>, 12 in
all, +0.10M parameters at r = 16). The alternative, one SE module per branch before the mixing, would add
0.19M; neither shows in the paper's tables, which give no parameter count for this network.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sebench.errors import UserError
from sebench.layers.fused import se_tail
from sebench.layers.se import SEConfig, SqueezeExcite
from sebench.models.common import build_stages, init_weights


class ShakeShake(torch.autograd.Function):
    """Forward alpha * a + (1 - alpha) * b; backward weighs the gradient by beta and 1 - beta."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor):
        ctx.save_for_backward(beta)
        return torch.lerp(b, a, alpha)  # b + alpha * (a - b) = alpha * a + (1 - alpha) * b

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (beta,) = ctx.saved_tensors
        return grad * beta, grad * (1 - beta), None, None


def shake_shake(a: torch.Tensor, b: torch.Tensor, training: bool) -> torch.Tensor:
    """Shake-Shake-Image combination of two branch outputs: per-image alpha, beta ~ U(0, 1) when
    training; their average at test time."""
    if not training:
        return 0.5 * (a + b)
    shape = (a.shape[0],) + (1,) * (a.dim() - 1)
    alpha = torch.rand(shape, device=a.device, dtype=a.dtype)
    beta = torch.rand(shape, device=a.device, dtype=a.dtype)
    return ShakeShake.apply(a, b, alpha, beta)


class ShakeBranch(nn.Sequential):
    """ReLU -> conv 3x3 (stride) -> BN -> ReLU -> conv 3x3 -> BN (the ReLU on the input is the block's)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                         nn.BatchNorm2d(cout))


class ShiftedShortcut(nn.Module):
    """Gastaldi's shortcut where the width changes: even and odd pixel grids, 1x1 conv each to half the
    width, concatenated, BN (applied to the block's ReLU'd input)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, cout // 2, 1, bias=False)
        self.conv2 = nn.Conv2d(cin, cout - cout // 2, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        s = self.stride
        even = h[:, :, ::s, ::s]
        odd = F.pad(h[:, :, 1:, 1:], (0, 1, 0, 1))[:, :, ::s, ::s]
        return self.bn(torch.cat([self.conv1(even), self.conv2(odd)], 1))


class ShakeBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, se: Optional[SEConfig] = None):
        super().__init__()
        self.branch1 = ShakeBranch(cin, cout, stride)
        self.branch2 = ShakeBranch(cin, cout, stride)
        self.shortcut = ShiftedShortcut(cin, cout, stride) if (cin != cout or stride != 1) else None
        self.se = SqueezeExcite(cout, se) if se is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(x)
        residual = shake_shake(self.branch1(h), self.branch2(h), self.training)
        shortcut = x if self.shortcut is None else self.shortcut(h)
        if self.se is not None:
            return se_tail(self.se, residual, shortcut, inplace=True)  # se(residual) + shortcut
        return residual + shortcut


class ShakeShakeResNet(nn.Module):
    """Shake-Shake ResNet-`depth` 2x`width`d for 32x32 inputs (see the module docstring)."""

    stage_ids = (1, 2, 3)

    def __init__(self, depth: int = 26, width: int = 96, num_classes: int = 10, se: Optional[SEConfig] = None,
                 se_stages: Optional[Sequence[int]] = None):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"Shake-Shake ResNet depth must be 6n+2, got {depth}")
        if se is not None and se.position != "standard":
            raise UserError(f"SE position {se.position!r} is not built for Shake-Shake (SE sits on the "
                            "shaken residual, before the addition)", field="se.position",
                            fix="allowed here: 'standard'")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.stages, cin = build_stages(
            self.stage_ids, [(width, n, 1), (2 * width, n, 2), (4 * width, n, 2)], 16,
            lambda sid, i, cin, cout, stride, cfg: ShakeBlock(cin, cout, stride, cfg), se, se_stages)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stages(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))
