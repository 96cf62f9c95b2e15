"""Residual blocks that take an SE position (Hu et al., Fig. 5 of the TPAMI version; source 003).

Where the SE module sits, for a block computing ``out = merge(F(x), shortcut(x))``:

* ``standard``   on the residual branch, before the addition: ``shortcut(x) + SE(F(x))``
* ``pre``        at the input of the residual branch (SE-PRE): ``shortcut(x) + F(SE(x))``
* ``post``       after the addition (SE-POST; post-activation blocks: after the final ReLU)
* ``identity``   on the identity branch, in parallel to the residual unit (SE-Identity):
                 ``SE(shortcut(x)) + F(x)``
* ``after_3x3``  inside a bottleneck, right after the 3x3 conv (and its BN/ReLU): the paper's SE_3x3,
                 which sees the bottleneck's narrow width.

Post-activation blocks (He et al. 2016a) end with ReLU after the addition; pre-activation blocks (He et
al. 2016b, WRN) do not. In a pre-activation block the BN-ReLU that opens the block feeds both branches
when the shortcut projects (as in the reference implementations), so ``pre`` scales that pre-activated
input of the residual branch's first conv; the shortcut never sees the SE.

Every block ends in :meth:`SEResidual._merge`: with SE at ``standard`` it is ``fused.se_tail``
(scale, add and ReLU as one fused autograd node unless the SE module's ``impl`` is ``'reference'``; see
``sebench.layers.fused``); otherwise the add and the ReLU run in place on the residual branch's output.
Every ReLU that follows a BN runs in place too: a BN (or conv) output is a temporary its producer does
not keep for backward, so this is exact and saves a buffer per ReLU, as timm's blocks do. In inference a
bottleneck hands its SE the squeeze computed from the conv3 input (the mean commutes with the 1x1 conv
and the eval-mode BN), so the SE never reads the block's widest tensor twice.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from sebench.errors import UserError
from sebench.layers.fused import se_tail
from sebench.layers.se import SEConfig, SqueezeExcite


def conv3x3(in_ch: int, out_ch: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_ch: int, out_ch: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)


class PadShortcut(nn.Module):
    """He et al.'s CIFAR option A: subsample by striding and zero-pad the new channels (no parameters)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.stride, self.extra = stride, out_ch - in_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


def projection(in_ch: int, out_ch: int, stride: int, bn: bool = True) -> nn.Module:
    """Option B: 1x1 conv (+BN for post-activation blocks)."""
    if not bn:
        return conv1x1(in_ch, out_ch, stride)
    return nn.Sequential(conv1x1(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch))


class SEResidual(nn.Module):
    """What every block shares: which SE position it uses and the module that sits there."""

    allowed_positions: tuple[str, ...] = ("standard", "pre", "post", "identity")

    def _init_se(self, se: Optional[SEConfig], channels: dict[str, int]) -> None:
        self.se_position: Optional[str] = se.position if se is not None else None
        self.se: Optional[SqueezeExcite] = None
        if se is None:
            return
        if se.position not in self.allowed_positions:
            raise UserError(f"SE position {se.position!r} does not exist in a {type(self).__name__}",
                            field="se.position",
                            fix=f"allowed here: {', '.join(self.allowed_positions)}")
        self.se = SqueezeExcite(channels[se.position], se)

    def _at(self, position: str, x: torch.Tensor) -> torch.Tensor:
        return self.se(x) if self.se_position == position else x

    def _merge(self, out: torch.Tensor, shortcut: torch.Tensor, relu: bool,
               narrow: Optional[tuple] = None) -> torch.Tensor:
        """``[relu](SE(out) + shortcut)`` at the standard position, else ``[relu](out + shortcut)``.
        `out` is the residual branch's fresh output: it may be overwritten. `narrow`: ``(z, conv, bn)``
        with ``out = bn(conv(z))``, for the SE's cheaper inference (see ``fused.se_tail``)."""
        if self.se_position == "standard":
            return se_tail(self.se, out, shortcut, relu=relu, inplace=True, narrow=narrow)
        out = out.add_(shortcut)
        return out.relu_() if relu else out


class BasicBlock(SEResidual):
    """Two 3x3 convs, post-activation (He et al. 2016a): CIFAR ResNets, ResNet-18/34."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, se: Optional[SEConfig] = None,
                 shortcut: str = "B"):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(in_ch, out_ch, stride), nn.BatchNorm2d(out_ch)
        self.conv2, self.bn2 = conv3x3(out_ch, out_ch), nn.BatchNorm2d(out_ch)
        if stride == 1 and in_ch == out_ch:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(in_ch, out_ch, stride)
        else:
            self.shortcut = projection(in_ch, out_ch, stride)
        self._init_se(se, {"standard": out_ch, "pre": in_ch, "post": out_ch, "identity": out_ch})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(self._at("pre", x))), inplace=True)
        out = self._merge(self.bn2(self.conv2(out)), self._at("identity", self.shortcut(x)), relu=True)
        return self._at("post", out)


class Bottleneck(SEResidual):
    """1x1 -> 3x3 (grouped for ResNeXt) -> 1x1, post-activation: ImageNet ResNet-50/101/152, ResNeXt.

    `stride_in_1x1`: where a downsampling block strides. The original Caffe release of ResNet (and the
    SE paper's FLOP counts: 3.86 GFLOPs for ResNet-50) puts it in the first 1x1 conv; torchvision/timm
    ("ResNet v1.5") put it in the 3x3 conv (4.09 GFLOPs, usually ~0.5% more accurate). Same parameters.
    """

    allowed_positions = ("standard", "pre", "post", "identity", "after_3x3")

    def __init__(self, in_ch: int, width: int, out_ch: int, stride: int = 1, groups: int = 1,
                 se: Optional[SEConfig] = None, stride_in_1x1: bool = True):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1, self.bn1 = conv1x1(in_ch, width, s1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = conv3x3(width, width, s3, groups), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = conv1x1(width, out_ch), nn.BatchNorm2d(out_ch)
        self.shortcut = (nn.Identity() if stride == 1 and in_ch == out_ch
                         else projection(in_ch, out_ch, stride))
        self._init_se(se, {"standard": out_ch, "pre": in_ch, "post": out_ch, "identity": out_ch,
                           "after_3x3": width})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(self._at("pre", x))), inplace=True)
        out = self._at("after_3x3", F.relu(self.bn2(self.conv2(out)), inplace=True))
        out = self._merge(self.bn3(self.conv3(out)), self._at("identity", self.shortcut(x)), relu=True,
                          narrow=(out, self.conv3, self.bn3))
        return self._at("post", out)


class PreActBasicBlock(SEResidual):
    """BN-ReLU-conv3x3 twice (He et al. 2016b); the Wide ResNet block (optional dropout between)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1, se: Optional[SEConfig] = None,
                 dropout: float = 0.0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_ch), conv3x3(in_ch, out_ch, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(out_ch), conv3x3(out_ch, out_ch)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection = (None if stride == 1 and in_ch == out_ch
                           else conv1x1(in_ch, out_ch, stride))
        self._init_se(se, {"standard": out_ch, "pre": in_ch, "post": out_ch, "identity": out_ch})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x), inplace=True)
        shortcut = x if self.projection is None else self.projection(act)
        out = self.conv1(self._at("pre", act))
        out = self.conv2(self.dropout(F.relu(self.bn2(out), inplace=True)))
        out = self._merge(out, self._at("identity", shortcut), relu=False)
        return self._at("post", out)


class PreActBottleneck(SEResidual):
    """BN-ReLU-conv 1x1 / 3x3 / 1x1 (He et al. 2016b): pre-activation ResNet-164."""

    allowed_positions = ("standard", "pre", "post", "identity", "after_3x3")

    def __init__(self, in_ch: int, width: int, out_ch: int, stride: int = 1,
                 se: Optional[SEConfig] = None):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(in_ch), conv1x1(in_ch, width)
        self.bn2, self.conv2 = nn.BatchNorm2d(width), conv3x3(width, width, stride)
        self.bn3, self.conv3 = nn.BatchNorm2d(width), conv1x1(width, out_ch)
        self.projection = (None if stride == 1 and in_ch == out_ch
                           else conv1x1(in_ch, out_ch, stride))
        self._init_se(se, {"standard": out_ch, "pre": in_ch, "post": out_ch, "identity": out_ch,
                           "after_3x3": width})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x), inplace=True)
        shortcut = x if self.projection is None else self.projection(act)
        out = self.conv1(self._at("pre", act))
        out = self._at("after_3x3", self.conv2(F.relu(self.bn2(out), inplace=True)))
        out = self.conv3(F.relu(self.bn3(out), inplace=True))
        out = self._merge(out, self._at("identity", shortcut), relu=False)
        return self._at("post", out)
