"""The model zoo: ``build_model(name, num_classes, se=..., se_stages=...)`` and its registry."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional, Sequence

from torch import nn

from sebench.errors import UserError, choice_error
from sebench.layers.se import make_se_config
from sebench.models.cifar import CNN3, CifarResNet, PreActResNet, ResNet18Cifar, WideResNet
from sebench.models.imagenet import ImageNetResNet
from sebench.models.inception import BNInception
from sebench.models.mobilenet import MobileNetV1
from sebench.models.shakeshake import ShakeShakeResNet
from sebench.models.shufflenet import ShuffleNetV1
from sebench.models.timm_models import register_timm_models


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    input_size: tuple[int, int, int]
    num_classes: int
    description: str


def _entry(name, builder, input_size, num_classes, description):
    return name, ModelEntry(name, builder, input_size, num_classes, description)


_CIFAR = (3, 32, 32)
_IMAGENET = (3, 224, 224)

MODELS: dict[str, ModelEntry] = dict([
    *[_entry(f"resnet{d}", partial(CifarResNet, d), _CIFAR, 10,
             f"CIFAR ResNet-{d} (He et al. 2016a, 16/32/64 channels, option-A shortcuts)")
      for d in (20, 32, 44, 56, 110)],
    _entry("preact_resnet164", partial(PreActResNet, 164), _CIFAR, 10,
           "pre-activation bottleneck ResNet-164 (He et al. 2016b)"),
    _entry("preact_resnet29", partial(PreActResNet, 29), _CIFAR, 10,
           "pre-activation bottleneck ResNet-29 (3 bottlenecks per stage): a CPU-sized stand-in for "
           "bottleneck-only ablations (SE_3x3) in quick profiles"),
    _entry("wrn16_8", partial(WideResNet, 16, 8), _CIFAR, 10, "Wide ResNet 16-8 (Zagoruyko & Komodakis)"),
    _entry("resnet18_cifar", ResNet18Cifar, _CIFAR, 10,
           "ResNet-18 with a 3x3 stem for 32x32 inputs (common CIFAR adaptation)"),
    _entry("cnn3", CNN3, _CIFAR, 10, "3-layer CNN of arXiv 2304.06502 (SE after the 2nd conv)"),
    _entry("shake_shake26_2x96d", partial(ShakeShakeResNet, 26, 96), _CIFAR, 10,
           "Shake-Shake 26 2x96d (Gastaldi 2017; shake-shake-image, 26.2M params); SE on each block's "
           "shaken residual before the addition"),
    _entry("mobilenet_v1_cifar", partial(MobileNetV1, cifar=True), _CIFAR, 10,
           "MobileNet v1 1.0 with a stride-1 stem for 32x32 inputs: a CPU-sized stand-in for the "
           "MobileNet row (SE after each depthwise-separable block)"),
    _entry("shufflenet_v1_cifar", partial(ShuffleNetV1, cifar=True), _CIFAR, 10,
           "ShuffleNet v1 1x (g=3) with a stride-1 stem and no max pool for 32x32 inputs: a CPU-sized "
           "stand-in for the ShuffleNet row (SE on each unit's branch)"),
    _entry("resnet18", partial(ImageNetResNet, (2, 2, 2, 2), False), _IMAGENET, 1000,
           "ImageNet ResNet-18 (basic blocks; 004's backbone at 224)"),
    _entry("resnet34", partial(ImageNetResNet, (3, 4, 6, 3), False), _IMAGENET, 1000,
           "ImageNet ResNet-34"),
    _entry("resnet50", partial(ImageNetResNet, (3, 4, 6, 3)), _IMAGENET, 1000,
           "ImageNet ResNet-50 (stride in the first 1x1, as the paper's Caffe release)"),
    _entry("resnet101", partial(ImageNetResNet, (3, 4, 23, 3)), _IMAGENET, 1000, "ImageNet ResNet-101"),
    _entry("resnet152", partial(ImageNetResNet, (3, 8, 36, 3)), _IMAGENET, 1000, "ImageNet ResNet-152"),
    _entry("resnext50_32x4d", partial(ImageNetResNet, (3, 4, 6, 3), groups=32, width_per_group=4),
           _IMAGENET, 1000, "ImageNet ResNeXt-50 (32x4d)"),
    _entry("resnext101_32x4d", partial(ImageNetResNet, (3, 4, 23, 3), groups=32, width_per_group=4),
           _IMAGENET, 1000, "ImageNet ResNeXt-101 (32x4d)"),
    _entry("bn_inception", BNInception, _IMAGENET, 1000,
           "BN-Inception (Ioffe & Szegedy 2015, figure 5: two 3x3 for each 5x5, stride-2 modules 3c/4e "
           "with pass-through max pooling); SE on each of the 10 Inception modules' outputs"),
    _entry("mobilenet_v1", MobileNetV1, _IMAGENET, 1000,
           "MobileNet v1 1.0 (Howard et al. 2017, 4.2M params); SE after each depthwise-separable block"),
    _entry("shufflenet_v1", ShuffleNetV1, _IMAGENET, 1000,
           "ShuffleNet v1 1x, g=3 (Zhang et al. 2018: group convs + channel shuffle); SE on each unit's "
           "residual branch before the add/concatenation"),
])
register_timm_models(MODELS, ModelEntry)  # VGG-16 and Inception-ResNet-v2 (torchvision/timm)


def get_entry(name: str) -> ModelEntry:
    if name not in MODELS:
        raise choice_error("model", name, MODELS, field="model")
    return MODELS[name]


def stage_ids(name: str) -> tuple[int, ...]:
    builder = get_entry(name).builder
    cls = builder.func if isinstance(builder, partial) else builder
    return tuple(cls.stage_ids)


def check_options(name: str, kwargs: dict) -> None:
    """UserError unless every key of `kwargs` is a constructor option of model `name` (without building it)."""
    entry = get_entry(name)
    # Options the entry fixes (depth, layout) are not the user's to change.
    fixed = set(entry.builder.keywords) if isinstance(entry.builder, partial) else set()
    accepted = set(inspect.signature(entry.builder).parameters) - {"num_classes", "se", "se_stages"} - fixed
    unknown = set(kwargs) - accepted
    if unknown:
        raise UserError(f"{name} takes no option(s) {sorted(unknown)}", field="model.kwargs",
                        fix=f"allowed: {', '.join(sorted(accepted)) or 'none'}")


def build_model(name: str, num_classes: Optional[int] = None, se=None,
                se_stages: Optional[Sequence[int]] = None, **kwargs) -> nn.Module:
    """Build a zoo model. `se`: None (no SE), a variant name, a dict of SE options or an SEConfig;
    `se_stages`: the stage ids that get SE (None: all; see each model's ``stage_ids``).
    Extra keyword options go to the constructor (e.g. ``stride_in='3x3'``, ``dropout=0.3``)."""
    entry = get_entry(name)
    cfg = make_se_config(se)
    allowed_stages = stage_ids(name)
    if se_stages is not None:
        se_stages = tuple(se_stages)
        bad = [s for s in se_stages if s not in allowed_stages]
        if bad or not se_stages:
            raise UserError(f"{name} has no stage(s) {bad or '(empty list)'}", field="se_stages",
                            fix=f"allowed: {', '.join(map(str, allowed_stages))}")
    check_options(name, kwargs)
    model = entry.builder(num_classes=num_classes or entry.num_classes, se=cfg, se_stages=se_stages,
                          **kwargs)
    model.input_size = entry.input_size
    model.sebench_name = name
    return model


__all__ = ["MODELS", "ModelEntry", "build_model", "check_options", "get_entry", "stage_ids"]
