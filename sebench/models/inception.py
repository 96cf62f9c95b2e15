"""BN-Inception (Ioffe & Szegedy 2015, "Batch Normalization", appendix figure 5) and SE-BN-Inception.

The network of the BN paper's figure 5 table, layer for layer (224x224 input):

    conv 7x7/2 (64) -> max pool 3x3/2 -> conv 1x1 (64) -> conv 3x3 (192) -> max pool 3x3/2
    -> inception 3a, 3b, 3c (stride 2) -> 4a, 4b, 4c, 4d, 4e (stride 2) -> 5a, 5b
    -> global average pool (7x7) -> linear 1000

Every convolution is followed by BN and ReLU (BN replaces the conv bias, so convs have none). Each
Inception module concatenates up to four branches (figure 5's columns):

    #1x1 | #3x3 reduce -> #3x3 | double #3x3 reduce -> #3x3 -> #3x3 | pool (+ 1x1 proj)

GoogLeNet's 5x5 convolutions are replaced by the two stacked 3x3 ("double #3x3"). Modules 3c and 4e
downsample: their 3x3 and second double-3x3 convs have stride 2, they have no 1x1 branch, and their pool
branch is a stride-2 3x3 max pool passed through with no projection ("max + pass through"). Pooling in
the other modules is a 3x3/1 average pool, except 5b's max pool, as the table says.

Readings where figure 5 leaves a detail open (stated here and in results/imagenet_costs.md):

* The first conv is marked "convolution*" in figure 5. We read it as the ordinary 7x7/2 convolution of the
  released Caffe model that the SE paper builds on (a depthwise-separable 7x7 with depth multiplier 8 is
  TF-slim's reading of the asterisk: it would save ~0.08 GFLOPs and ~7k parameters).
* Figure 5 prints 3c's output as 28x28x576 and 4c/4d's depth as 576; the channel sums of their columns
  (and the next modules' inputs) give 14x14x576 after 3c and 608 for 4c/4d, which is what we build.
* Pooling windows pad by 1 (PyTorch's floor mode). Caffe's unpadded ceil-mode pooling gives the same map
  sizes at 224x224 (112 -> 56 -> 28 -> 14 -> 7); the padded form keeps a stride-2 module's pool and conv
  branches the same size at any input (32x32 included).
* No dropout: the BN paper removes it ("Remove Dropout", section 4.2.1); ``dropout=`` adds it before the
  classifier if wanted.

SE-BN-Inception (SE paper, source 003, figure 2): the whole Inception module is the transformation F_tr, so
one SE module recalibrates each module's concatenated output: 10 SE modules (3a..5b, the stride-2 modules
3c and 4e included, pass-through channels and all). Stage ids are the table's 3, 4, 5; SE modules are
named ``SE_<stage>_<module>`` (3a = SE_3_1, 4e = SE_4_5, 5b = SE_5_2).

Costs at 224x224 (multiply-adds, the suite's counter): 2.033 GFLOPs and 11.29M parameters without SE,
against the SE paper's 2.03 GFLOPs; SE adds 0.65M parameters (11.93M; SENet's released SE-BN-Inception
lists 11.92M) and 0.0006 G multiply-adds (2.033 against the paper's 2.04: the uncounted pooling and channel
scale are most of the difference, see results/imagenet_costs.md).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from sebench.layers.se import SEConfig, SqueezeExcite
from sebench.models.common import init_weights, stage_se

# Figure 5 of Ioffe & Szegedy (2015): name -> (#1x1, #3x3 reduce, #3x3, double #3x3 reduce, double #3x3,
# pool, pool projection (0: pass through), stride)
BN_INCEPTION_MODULES: dict[str, tuple[int, int, int, int, int, str, int, int]] = {
    "3a": (64, 64, 64, 64, 96, "avg", 32, 1),
    "3b": (64, 64, 96, 64, 96, "avg", 64, 1),
    "3c": (0, 128, 160, 64, 96, "max", 0, 2),
    "4a": (224, 64, 96, 96, 128, "avg", 128, 1),
    "4b": (192, 96, 128, 96, 128, "avg", 128, 1),
    "4c": (160, 128, 160, 128, 160, "avg", 128, 1),
    "4d": (96, 128, 192, 160, 192, "avg", 128, 1),
    "4e": (0, 128, 192, 192, 256, "max", 0, 2),
    "5a": (352, 192, 320, 160, 224, "avg", 128, 1),
    "5b": (352, 192, 320, 192, 224, "max", 128, 1),
}


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class InceptionBN(nn.Module):
    """One module of figure 5: its branches concatenated, then (SE-BN-Inception) one SE module."""

    def __init__(self, cin: int, n1x1: int, n3x3red: int, n3x3: int, nd3x3red: int, nd3x3: int,
                 pool: str, proj: int, stride: int = 1, se: Optional[SEConfig] = None):
        super().__init__()
        self.branch1x1 = conv_bn_relu(cin, n1x1, 1) if n1x1 else None
        self.branch3x3 = nn.Sequential(conv_bn_relu(cin, n3x3red, 1), conv_bn_relu(n3x3red, n3x3, 3, stride))
        self.branch3x3dbl = nn.Sequential(conv_bn_relu(cin, nd3x3red, 1), conv_bn_relu(nd3x3red, nd3x3, 3),
                                          conv_bn_relu(nd3x3, nd3x3, 3, stride))
        pool_layer = (nn.AvgPool2d(3, stride, 1) if pool == "avg" else nn.MaxPool2d(3, stride, 1))
        self.branch_pool = nn.Sequential(pool_layer, *([conv_bn_relu(cin, proj, 1)] if proj else []))
        self.out_channels = n1x1 + n3x3 + nd3x3 + (proj or cin)
        self.se = SqueezeExcite(self.out_channels, se) if se is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.branch3x3(x), self.branch3x3dbl(x), self.branch_pool(x)]
        if self.branch1x1 is not None:
            branches.insert(0, self.branch1x1(x))
        out = torch.cat(branches, 1)
        return self.se(out) if self.se is not None else out


class BNInception(nn.Module):
    """BN-Inception of Ioffe & Szegedy (2015), figure 5; SE after every Inception module (see the module
    docstring). ``se_stages`` selects among the stages 3, 4, 5 (the 28x28, 14x14 and 7x7 groups)."""

    stage_ids = (3, 4, 5)

    def __init__(self, num_classes: int = 1000, se: Optional[SEConfig] = None,
                 se_stages: Optional[Sequence[int]] = None, dropout: float = 0.0):
        super().__init__()
        if se is not None and se.position != "standard":
            from sebench.errors import UserError
            raise UserError(f"SE position {se.position!r} does not exist in BN-Inception (it has no "
                            "residual blocks)", field="se.position", fix="allowed here: 'standard'")
        self.stem = nn.Sequential(
            conv_bn_relu(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1),
            conv_bn_relu(64, 64, 1), conv_bn_relu(64, 192, 3), nn.MaxPool2d(3, 2, 1))
        modules, cin, counts = [], 192, {}
        for name, cfg in BN_INCEPTION_MODULES.items():
            stage = int(name[0])
            module = InceptionBN(cin, *cfg, se=stage_se(se, stage, se_stages))
            counts[stage] = counts.get(stage, 0) + 1
            if module.se is not None:
                module.se.tag = f"SE_{stage}_{counts[stage]}"
            modules.append((f"inception_{name}", module))
            cin = module.out_channels
        self.inception = nn.Sequential(OrderedDict(modules))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inception(self.stem(x))
        return self.fc(self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)))
