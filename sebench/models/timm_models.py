"""timm and torchvision networks in the zoo, and the SE family as timm's pluggable attention layer.

1. :func:`se_attn_layer` turns an SE config into what timm's blocks call as ``attn_layer(channels)``:

       timm.create_model('resnet50', block_args=dict(attn_layer=se_attn_layer('se')))

   is timm's ResNet-50 with sebench's SE at the standard position (same parameter count as timm's
   ``seresnet50``: timm rounds the hidden width to a multiple of 8, which C // 16 already is for every
   ResNet-50 width). :func:`timm_resnet` is the shortcut.

2. Two rows of the SE paper's ImageNet table (source 003) that torchvision/timm build exactly, with
   ``pretrained=False`` (nothing is downloaded). Neither has residual-block SE positions, so only
   ``position='standard'`` is accepted and there are no stages to select:

   ``vgg16``                torchvision VGG-16 with BN after every conv (``vgg16_bn``): the SE paper trains
                            VGG-16 from scratch with BN added after each convolution (the seed notes keep
                            only its table). SE after the ReLU that follows each of the 13 convs (the
                            paper's VGG instantiation: SE after the non-linearity following each conv).
   ``inception_resnet_v2``  timm's Inception-ResNet-v2. SE on each residual unit's branch, after its last
                            1x1 conv and before the scaled addition (SE-Inception-ResNet, as SE-ResNet).

   BN-Inception, MobileNet and ShuffleNet (v1) are the zoo's own (``inception.py``, ``mobilenet.py``,
   ``shufflenet.py``): torchvision and timm have no BN-Inception or ShuffleNet v1.

timm and torchvision are imported only when one of these models is built.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch.nn.functional as F
from torch import nn

from sebench.errors import UserError
from sebench.layers.se import SEConfig, SqueezeExcite, make_se_config

IMAGENET = (3, 224, 224)


# -- 1. SE as timm's attention layer ------------------------------------------------------------------


def se_attn_layer(se=True, **overrides) -> Callable[..., nn.Module]:
    """A constructor ``f(channels, device=None, dtype=None, **ignored)`` building sebench's SE with the
    given config (variant name, dict or SEConfig; keyword overrides on top), the signature timm's
    ``create_attn`` calls. Hand it to timm as ``attn_layer`` (e.g. ``block_args={'attn_layer': f}``)."""
    cfg = make_se_config(se, **overrides)
    if cfg is None:
        raise UserError("se_attn_layer needs an SE config, got none", field="se")

    def make(channels: int, device=None, dtype=None, **_ignored) -> nn.Module:
        return SqueezeExcite(channels, cfg).to(device=device, dtype=dtype)
    make.se_config = cfg
    return make


def timm_resnet(name: str = "resnet50", se=None, **kwargs) -> nn.Module:
    """A timm ResNet (``pretrained=False``) with sebench's SE as its blocks' attention layer."""
    import timm

    if se is not None:
        block_args = dict(kwargs.pop("block_args", None) or {})
        block_args["attn_layer"] = se_attn_layer(se)
        kwargs["block_args"] = block_args
    return timm.create_model(name, pretrained=False, **kwargs)


# -- 2. zoo entries -------------------------------------------------------------------------------------


def _only_standard(name: str, se: Optional[SEConfig]) -> None:
    if se is not None and se.position != "standard":
        raise UserError(f"SE position {se.position!r} does not exist in {name} (it has no residual "
                        "blocks with SE positions)", field="se.position", fix="allowed here: 'standard'")


def _tag(se_mod: SqueezeExcite, index: int) -> SqueezeExcite:
    se_mod.tag = f"SE_{index}"
    return se_mod


def _no_stages(fn):
    fn.stage_ids = ()
    return fn


@_no_stages
def vgg16(num_classes: int = 1000, se: Optional[SEConfig] = None,
          se_stages: Optional[Sequence[int]] = None, dropout: float = 0.5) -> nn.Module:
    from torchvision.models import vgg16_bn

    _only_standard("vgg16", se)
    model = vgg16_bn(weights=None, num_classes=num_classes, dropout=dropout)
    if se is not None:
        layers, convs, k = [], None, 0
        for layer in model.features:
            layers.append(layer)
            if isinstance(layer, nn.Conv2d):
                convs = layer.out_channels
            elif isinstance(layer, nn.ReLU):
                k += 1
                layers.append(_tag(SqueezeExcite(convs, se), k))
        model.features = nn.Sequential(*layers)
    return model


def _pad_to_min(min_side: int):
    """Forward pre-hook: zero-pad inputs smaller than `min_side` (timm's valid-padding stem and
    reductions need 75x75); inputs of at least that size pass untouched."""
    def hook(module, args):
        x = args[0]
        ph, pw = max(0, min_side - x.shape[-2]), max(0, min_side - x.shape[-1])
        if not ph and not pw:
            return None
        return (F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)), *args[1:])
    return hook


@_no_stages
def inception_resnet_v2(num_classes: int = 1000, se: Optional[SEConfig] = None,
                        se_stages: Optional[Sequence[int]] = None, drop_rate: float = 0.0) -> nn.Module:
    """timm's Inception-ResNet-v2 (299x299). Inputs below 75x75 are zero-padded to 75x75 (its stem and
    reduction blocks use unpadded convs and cannot take less); at the paper's size nothing changes."""
    import timm

    from sebench.surgery import ConvSE

    _only_standard("inception_resnet_v2", se)
    model = timm.create_model("inception_resnet_v2", pretrained=False, num_classes=num_classes,
                              drop_rate=drop_rate)
    if se is not None:
        units = [m for m in model.modules() if type(m).__name__ in ("Block35", "Block17", "Block8")]
        for k, unit in enumerate(units, 1):
            unit.conv2d = ConvSE(unit.conv2d, _tag(SqueezeExcite(unit.conv2d.out_channels, se), k))
    model.register_forward_pre_hook(_pad_to_min(75))
    return model


# name -> (builder, input size, description); num_classes 1000 for all
TIMM_ZOO: dict[str, tuple[Callable[..., nn.Module], tuple[int, int, int], str]] = {
    "vgg16": (vgg16, IMAGENET,
              "VGG-16 with BN after each conv (torchvision vgg16_bn; the SE paper trains VGG-16 from "
              "scratch with BN added after every conv); SE after each of the 13 conv+BN+ReLU"),
    "inception_resnet_v2": (inception_resnet_v2, (3, 299, 299),
                            "Inception-ResNet-v2 (timm); SE on each residual unit's branch before the "
                            "scaled addition"),
}


def register_timm_models(models: dict, entry_cls) -> None:
    """Add the entries of TIMM_ZOO to the zoo's registry: ``models[name] = entry_cls(name, builder,
    input_size, num_classes, description)``."""
    for name, (builder, size, description) in TIMM_ZOO.items():
        models[name] = entry_cls(name, builder, size, 1000, description)


__all__ = ["TIMM_ZOO", "register_timm_models", "se_attn_layer", "timm_resnet"]
