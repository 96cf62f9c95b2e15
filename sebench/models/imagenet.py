"""ImageNet ResNet-18/34/50/101/152 and ResNeXt-50/101 (32x4d), with the SE placements of the paper.

Stage ids follow the paper's naming of ResNet stages (conv2_x .. conv5_x = stages 2..5), so
``se_stages=(4,)`` is the ablation's SE_Stage_4 and SE modules are named ``SE_<stage>_<block>`` as in the
excitation study (SE_2_3, SE_4_6, SE_5_1 ...).

Where a downsampling bottleneck strides (``stride_in``), same parameters either way:
``'1x1'`` is the original Caffe release of ResNet that the SE paper builds on and counts: ResNet-50 is
3.86 G multiply-adds at 224x224 (the paper: 3.86). ``'3x3'`` is torchvision/timm's placement ("ResNet
v1.5"): 4.09 G. ResNeXt's own release strides in the 3x3, and the paper's ResNeXt-50 figure (4.24) matches
that (4.23 measured; 3.77 with the 1x1 placement). Default (None): '1x1' for ResNets, '3x3' for ResNeXts.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sebench.errors import choice_error
from sebench.layers.blocks import BasicBlock, Bottleneck
from sebench.layers.se import SEConfig
from sebench.models.common import build_stages, init_weights

STRIDE_PLACEMENTS = ("1x1", "3x3")


class ImageNetResNet(nn.Module):
    stage_ids = (2, 3, 4, 5)

    def __init__(self, layers: Sequence[int], bottleneck: bool = True, num_classes: int = 1000,
                 se: Optional[SEConfig] = None, se_stages: Optional[Sequence[int]] = None,
                 groups: int = 1, width_per_group: int = 64, stride_in: Optional[str] = None):
        super().__init__()
        stride_in = stride_in or ("1x1" if groups == 1 else "3x3")
        if stride_in not in STRIDE_PLACEMENTS:
            raise choice_error("stride placement", stride_in, STRIDE_PLACEMENTS, field="stride_in")
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        expansion = 4 if bottleneck else 1
        planes = (64, 128, 256, 512)
        inner = dict(zip(self.stage_ids, (p * width_per_group // 64 * groups for p in planes)))  # bottleneck width

        def make(sid, i, cin, cout, stride, cfg):
            if bottleneck:
                return Bottleneck(cin, inner[sid], cout, stride, groups, cfg, stride_in == "1x1")
            return BasicBlock(cin, cout, stride, cfg, "B")
        plan = [(p * expansion, n, s) for p, n, s in zip(planes, layers, (1, 2, 2, 2))]
        self.stages, in_ch = build_stages(self.stage_ids, plan, 64, make, se, se_stages)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, stride=2, padding=1)
        return self.fc(self.stages(x).mean((2, 3)))
