"""32x32 networks: CIFAR ResNets, pre-activation ResNet-164, WRN-16-8, ResNet-18 (CIFAR stem), and the
3-layer CNN of arXiv 2304.06502.

Stage ids count from 1 (the three 16/32/64-channel stages of He et al.'s CIFAR ResNets); SE modules are
named ``SE_<stage>_<block>``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sebench.errors import UserError
from sebench.layers.blocks import BasicBlock, PreActBasicBlock, PreActBottleneck, conv3x3
from sebench.layers.se import SEConfig, SqueezeExcite
from sebench.models.common import build_stages, init_weights, stage_se


class CifarResNet(nn.Module):
    """He et al. 2016a, section 4.2: 6n+2 layers, 16/32/64 channels, option-A (parameter-free) shortcuts.

    ResNet-20 has 0.27M parameters and ResNet-110 1.7M, as published.
    """

    stage_ids = (1, 2, 3)

    def __init__(self, depth: int, num_classes: int = 10, se: Optional[SEConfig] = None,
                 se_stages: Optional[Sequence[int]] = None, shortcut: str = "A"):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        widths = (16, 32, 64)
        self.conv1, self.bn1 = conv3x3(3, 16), nn.BatchNorm2d(16)
        self.stages, _ = build_stages(
            self.stage_ids, [(w, n, s) for w, s in zip(widths, (1, 2, 2))], 16,
            lambda sid, i, cin, cout, stride, cfg: BasicBlock(cin, cout, stride, cfg, shortcut), se, se_stages)
        self.fc = nn.Linear(64, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(F.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class PreActResNet(nn.Module):
    """Pre-activation ResNet with bottlenecks (He et al. 2016b): depth 9n+2, widths 16/32/64 (x4 out).

    ResNet-164 (n=18) has 1.7M parameters.
    """

    stage_ids = (1, 2, 3)

    def __init__(self, depth: int = 164, num_classes: int = 10, se: Optional[SEConfig] = None,
                 se_stages: Optional[Sequence[int]] = None):
        super().__init__()
        if (depth - 2) % 9:
            raise ValueError(f"pre-activation bottleneck ResNet depth must be 9n+2, got {depth}")
        n = (depth - 2) // 9
        self.conv1 = conv3x3(3, 16)
        # Bottlenecks: a stage of width w has w channels inside and 4w out.
        self.stages, in_ch = build_stages(
            self.stage_ids, [(4 * w, n, s) for w, s in zip((16, 32, 64), (1, 2, 2))], 16,
            lambda sid, i, cin, cout, stride, cfg: PreActBottleneck(cin, cout // 4, cout, stride, cfg),
            se, se_stages)
        self.bn = nn.BatchNorm2d(in_ch)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stages(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class WideResNet(nn.Module):
    """WRN-d-k (Zagoruyko & Komodakis 2016): pre-activation basic blocks, (d-4)/6 per stage, widths
    16k/32k/64k. WRN-16-8 has 11.0M parameters."""

    stage_ids = (1, 2, 3)

    def __init__(self, depth: int = 16, widen: int = 8, num_classes: int = 10,
                 se: Optional[SEConfig] = None, se_stages: Optional[Sequence[int]] = None,
                 dropout: float = 0.0):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        self.conv1 = conv3x3(3, 16)
        self.stages, in_ch = build_stages(
            self.stage_ids, [(w * widen, n, s) for w, s in zip((16, 32, 64), (1, 2, 2))], 16,
            lambda sid, i, cin, cout, stride, cfg: PreActBasicBlock(cin, cout, stride, cfg, dropout),
            se, se_stages)
        self.bn = nn.BatchNorm2d(in_ch)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.stages(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class ResNet18Cifar(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stem, no max-pool, four stages 64-512 with projection shortcuts
    (the common CIFAR adaptation; 11.2M parameters). 004 trains ResNet-18 on 224 crops: use ``resnet18``
    (ImageNet stem) for that recipe."""

    stage_ids = (1, 2, 3, 4)

    def __init__(self, num_classes: int = 10, se: Optional[SEConfig] = None,
                 se_stages: Optional[Sequence[int]] = None):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(3, 64), nn.BatchNorm2d(64)
        self.stages, _ = build_stages(
            self.stage_ids, [(w, 2, s) for w, s in zip((64, 128, 256, 512), (1, 2, 2, 2))], 64,
            lambda sid, i, cin, cout, stride, cfg: BasicBlock(cin, cout, stride, cfg, "B"), se, se_stages)
        self.fc = nn.Linear(512, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(F.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


class CNN3(nn.Module):
    """The 3-layer CNN of arXiv 2304.06502, section 2 (CIFAR-10; Adadelta lr 1.0, x0.7 per epoch).

    The paper shows this network only in a figure the text omits; its recipe (batch 64, Adadelta lr 1.0,
    StepLR x0.7 per epoch) is PyTorch's MNIST example's. Two readings, chosen with `reading`:

    - ``"three_conv"`` (default): three 3x3 conv layers (32, 64, 128 channels, padding 1), each ReLU +
      2x2 max-pool, then dropout 0.25 and a linear classifier: "3 layers" read as three conv layers.
    - ``"pytorch_example"``: the cited example's network on 3-channel 32x32 input: conv 3->32, conv
      32->64 (3x3, no padding), 2x2 max-pool, dropout 0.25, FC 12544->128, ReLU, dropout 0.5, FC 128->10:
      "3 layers" read as its conv, conv and hidden FC layer.

    "If any module is needed to be tested, we replace the 2nd conv layer with the module": an SE module
    cannot stand in for a 32->64 conv alone (it keeps the channel count), so in both readings the second
    conv layer becomes conv + ReLU + the SE module (any variant), the SE acting on its 64 channels. The
    one SE position is stage 2 (``SE_2_1``).
    """

    stage_ids = (2,)
    readings = ("three_conv", "pytorch_example")

    def __init__(self, num_classes: int = 10, se: Optional[SEConfig] = None,
                 se_stages: Optional[Sequence[int]] = None, dropout: float = 0.25,
                 reading: str = "three_conv"):
        super().__init__()
        if reading not in self.readings:
            raise UserError(f"unknown 3-layer CNN reading {reading!r}", field="model.kwargs.reading",
                            fix=f"allowed: {', '.join(self.readings)}")
        self.reading = reading
        example = reading == "pytorch_example"
        # A plain CNN (no BN): the convs keep their bias and PyTorch's default init.
        self.conv1 = nn.Conv2d(3, 32, 3, padding=0 if example else 1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=0 if example else 1)
        self.conv3 = None if example else nn.Conv2d(64, 128, 3, padding=1)
        cfg = stage_se(se, 2, se_stages)
        if cfg is not None and cfg.position != "standard":
            raise UserError(f"the 3-layer CNN has no residual block, so SE position {cfg.position!r} "
                            "does not exist", field="se.position", fix="allowed here: 'standard'")
        self.se: Optional[SqueezeExcite] = SqueezeExcite(64, cfg) if cfg is not None else None
        if self.se is not None:
            self.se.tag = "SE_2_1"
        self.dropout = nn.Dropout(dropout)
        if example:  # 32 -> 30 -> 28 -> pooled 14: 64 * 14 * 14 features
            self.fc1: Optional[nn.Linear] = nn.Linear(64 * 14 * 14, 128)
            self.dropout2: Optional[nn.Dropout] = nn.Dropout(0.5)
            self.fc = nn.Linear(128, num_classes)
        else:
            self.fc1 = self.dropout2 = None
            self.fc = nn.Linear(128 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        if self.conv3 is not None:
            x = F.max_pool2d(x, 2)
        x = F.relu(self.conv2(x))
        if self.se is not None:
            x = self.se(x)
        x = F.max_pool2d(x, 2)
        if self.conv3 is not None:
            x = F.max_pool2d(F.relu(self.conv3(x)), 2)
            return self.fc(self.dropout(torch.flatten(x, 1)))
        x = self.dropout2(F.relu(self.fc1(self.dropout(torch.flatten(x, 1)))))
        return self.fc(x)
