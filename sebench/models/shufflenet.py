"""ShuffleNet v1 (Zhang et al. 2018, "ShuffleNet", table 1) and SE-ShuffleNet, with a 32x32 stand-in.

ShuffleNet 1x, g = 3 (the SE paper's row, 140 MFLOPs): conv 3x3/2 (24) -> max pool 3x3/2 -> stage 2
(4 units, 240 channels) -> stage 3 (8 units, 480) -> stage 4 (4 units, 960) -> global pool -> linear.
A unit (figure 2 b/c): 1x1 group conv (g groups) -> BN -> ReLU -> channel shuffle -> 3x3 depthwise conv
(stride 2 in a stage's first unit) -> BN -> 1x1 group conv -> BN; then the shortcut is added (stride 1)
or, in a stage's first unit, a 3x3/2 average pool of the input is concatenated; ReLU. As the paper says:
the bottleneck is 1/4 of the unit's output channels, and stage 2's first 1x1 conv is not grouped (its
input has only 24 channels). In a concatenating unit the branch outputs (output - input) channels.

Readings (also in results/imagenet_costs.md):

* "Bottleneck = 1/4 of the output channels" is read as 1/4 of the stage's width (240/480/960 -> 60/120/240)
  in every unit, the concatenating ones included (as the authors' released code does).
* Channel shuffle follows only a grouped 1x1 conv (after stage 2's ungrouped first conv a shuffle is a fixed
  permutation of a dense layer's outputs, which changes nothing).

SE-ShuffleNet (source 003, lightweight table: 1.8M -> 2.4M parameters, 140 -> 142 MFLOPs). The seeds do not
say where the SE modules sit; the parameter count does. Candidate readings, r = 16, with our 1.87M
baseline (SE parameters ~= 2C^2/16 per module):

* on each unit's residual branch, after its last BN and before the add / concat (SE-ResNet's position;
  C = 240/480/960, or the branch's 216/240/480 in the concatenating units): +0.61M -> 2.48M.   <- ours
* on each unit's output, after the add / concat and ReLU (C = 240/480/960 everywhere): +0.72M -> 2.59M.
* on the bottleneck (after the depthwise conv, C = 60/120/240): +0.05M -> 1.92M.

Only the first gives the paper's +0.6M (the output reading's +0.7M would print as 2.5-2.6M, the bottleneck
reading's +0.05M as 1.9M). So SE sits at the standard position of SE-ResNet: on the residual branch before
it meets the shortcut. Our 2.48M against the printed 2.4M is the baseline's 1.87M against the printed
1.8M carried along (the paper's figures are truncated or rounded to 0.1M). SE's multiply-adds are its FCs'
(0.6M, i.e. 0.6 MFLOPs); the paper's +2 MFLOPs is about that plus the channel scale over every branch
output (~1.6M multiplies), which our counter, as for every network, leaves out.

``shufflenet_v1_cifar``: the same units on 32x32 inputs, for CPU-sized stand-ins (as ResNet-20 stands in
for ResNet-50): the stem conv has stride 1 and no max pool follows, so stages 2-4 see 32 -> 16 -> 8 -> 4.
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

# ShuffleNet table 1: output channels of stages 2-4 per group count g (complexity 1x)
STAGE_WIDTHS = {1: (144, 288, 576), 2: (200, 400, 800), 3: (240, 480, 960), 4: (272, 544, 1088),
                8: (384, 768, 1536)}
STAGE_UNITS = (4, 8, 4)


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[N, g*n, H, W] viewed as [N, g, n, H, W], transposed to [N, n, g, H, W] and flattened back."""
    b, c, h, w = x.shape
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """Figure 2 (b) (stride 1, add) and (c) (stride 2, concatenate), with SE on the branch's output."""

    def __init__(self, cin: int, cout: int, mid: int, groups: int, stride: int,
                 group_first: bool = True, se: Optional[SEConfig] = None):
        super().__init__()
        self.stride = stride
        branch_out = cout - cin if stride == 2 else cout
        self.groups1 = groups if group_first else 1
        self.conv1 = nn.Conv2d(cin, mid, 1, groups=self.groups1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)  # depthwise
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, branch_out, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(branch_out)
        self.se = SqueezeExcite(branch_out, se) if se is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        if self.groups1 > 1:
            out = channel_shuffle(out, self.groups1)
        out = self.bn3(self.conv3(self.bn2(self.conv2(out))))
        if self.stride == 2:
            if self.se is not None:
                out = self.se(out)
            return F.relu(torch.cat([F.avg_pool2d(x, 3, 2, 1), out], 1))
        if self.se is not None:
            return se_tail(self.se, out, x, relu=True, inplace=True)  # relu(se(out) + x)
        return F.relu(out + x)


class ShuffleNetV1(nn.Module):
    """ShuffleNet v1 (complexity 1x) with g groups; ``cifar=True``: the 32x32 stem (see the module
    docstring). SE modules are named ``SE_<stage>_<unit>`` (stages 2-4, as the paper's table 1)."""

    stage_ids = (2, 3, 4)

    def __init__(self, num_classes: int = 1000, se: Optional[SEConfig] = None,
                 se_stages: Optional[Sequence[int]] = None, groups: int = 3, cifar: bool = False):
        super().__init__()
        if groups not in STAGE_WIDTHS:
            raise UserError(f"ShuffleNet v1 has no width table for {groups} groups", field="model.kwargs",
                            fix=f"groups: one of {', '.join(map(str, STAGE_WIDTHS))}")
        if se is not None and se.position != "standard":
            raise UserError(f"SE position {se.position!r} is not built for ShuffleNet (SE sits on the "
                            "residual branch, before the add or concatenation)", field="se.position",
                            fix="allowed here: 'standard'")
        stem_stride = 1 if cifar else 2
        self.stem = nn.Sequential(nn.Conv2d(3, 24, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(24),
                                  nn.ReLU(inplace=True))
        self.pool = nn.Identity() if cifar else nn.MaxPool2d(3, 2, 1)
        # Each stage opens with a stride-2 unit; stage 2's first unit takes the 24-channel stem ungrouped.
        self.stages, cin = build_stages(
            self.stage_ids, [(cout, n, 2) for cout, n in zip(STAGE_WIDTHS[groups], STAGE_UNITS)], 24,
            lambda sid, i, cin, cout, stride, cfg: ShuffleUnit(cin, cout, cout // 4, groups, stride,
                                                               group_first=not (sid == 2 and i == 0), se=cfg),
            se, se_stages)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.pool(self.stem(x)))
        return self.fc(x.mean((2, 3)))
