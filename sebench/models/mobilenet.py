"""MobileNet v1 (Howard et al. 2017, table 1; width 1.0, 224x224) and SE-MobileNet, with a 32x32 stand-in.

conv 3x3/2 (32) -> 13 depthwise-separable blocks (3x3 depthwise conv -> BN -> ReLU -> 1x1 conv -> BN ->
ReLU) with output widths 64, 128/2, 128, 256/2, 256, 512/2, 512 x5, 1024/2, 1024 (/2: the depthwise conv
strides) -> global average pool -> linear. 4.23M parameters and 569 M multiply-adds, the SE paper's 4.2M /
569 MFLOPs (source 003).

SE-MobileNet: one SE module after each depthwise-separable block (on its pointwise conv's output, after BN
and ReLU), as SE-VGG puts one after each conv's non-linearity (MobileNet has no residual branch). With r = 16
this adds 0.48M parameters: 4.71M, the paper's 4.7M. SE modules are named ``SE_1`` .. ``SE_13``.

``mobilenet_v1_cifar``: the same blocks on 32x32 inputs, for CPU-sized stand-ins: the stem conv has stride 1,
so the four strided blocks take 32 -> 16 -> 8 -> 4 -> 2 (the common CIFAR adaptation).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from sebench.errors import UserError
from sebench.layers.se import SEConfig, SqueezeExcite
from sebench.models.common import init_weights

# (output channels, depthwise stride) of the 13 depthwise-separable blocks (MobileNet table 1)
BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
          (512, 1), (512, 1), (1024, 2), (1024, 1))


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, se: Optional[SEConfig] = None):
        super().__init__()
        self.dw = nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                                nn.BatchNorm2d(cin), nn.ReLU(inplace=True))
        self.pw = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                nn.ReLU(inplace=True))
        self.se = SqueezeExcite(cout, se) if se is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pw(self.dw(x))
        return self.se(x) if self.se is not None else x


class MobileNetV1(nn.Module):
    """MobileNet v1 1.0 (see the module docstring); ``cifar=True``: the 32x32 stem. No stages to select
    (``se_stages`` must be None): SE goes after every block."""

    stage_ids = ()

    def __init__(self, num_classes: int = 1000, se: Optional[SEConfig] = None,
                 se_stages: Optional[Sequence[int]] = None, cifar: bool = False, dropout: float = 0.0):
        super().__init__()
        if se is not None and se.position != "standard":
            raise UserError(f"SE position {se.position!r} does not exist in MobileNet (it has no residual "
                            "blocks)", field="se.position", fix="allowed here: 'standard'")
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 1 if cifar else 2, 1, bias=False), nn.BatchNorm2d(32),
                                  nn.ReLU(inplace=True))
        blocks, cin = [], 32
        for k, (cout, stride) in enumerate(BLOCKS, 1):
            block = DepthwiseSeparable(cin, cout, stride, se)
            if block.se is not None:
                block.se.tag = f"SE_{k}"
            blocks.append(block)
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(self.dropout(x.mean((2, 3))))
