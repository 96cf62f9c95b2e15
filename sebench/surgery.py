"""Architecture-agnostic SE: add an SE module after every Conv2d of any model (source 000's method card).

``add_se(model, min_channels=128, latent_channels=64)`` replaces every ``nn.Conv2d`` whose
``min(in_channels, out_channels) >= min_channels`` by a :class:`ConvSE` (the conv, then an SE module over
its output channels), in place, and returns how many it wrapped. It works on any ``nn.Module`` (timm,
torchvision, the zoo): it only swaps child modules, so the model's own forward is untouched.

* Hidden width: ``latent_channels`` as in source 000, an int count (64 suggested there) or a fraction of the
  conv's output channels when < 1; ``latent_channels=None`` takes the width from `se` (its
  ``reduction``, the paper's r, or its ``latent_channels``).
* `se`: which member of the SE family (variant, squeeze, gate, bias): an SEConfig, a dict, or a variant
  name. Surgery has no block positions: only ``position='standard'`` is accepted.
* Grouped and depthwise convs get an SE over their output channels (``depthwise=False`` skips
  depthwise convs, i.e. ``groups == in_channels > 1``).
* `exclude`: module-name patterns (``fnmatch``, matched against the conv's qualified name and each of
  its parents', e.g. ``'layer4.*'`` or ``'stem'``) or module classes (convs that are, or sit inside,
  instances of them are skipped).
* Never wraps twice: a :class:`ConvSE` marks what surgery has done, and a second call skips every ConvSE
  (and the conv inside it), so it returns 0. A conv shared by several parents is wrapped once.

A ConvSE forwards attribute reads it does not have to its conv (``.out_channels``, ``.weight``,
``.stride`` ...), so code that inspects the conv keeps working. Composer's squeeze-excite algorithm is the
model for this (surgery that marks what it wrapped); this is an independent implementation.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Iterable, Optional, Union

import torch
from torch import nn

from sebench.errors import UserError
from sebench.layers.fused import se_tail
from sebench.layers.se import SEConfig, SqueezeExcite, make_se_config

SURGERY_OPTIONS = ("min_channels", "latent_channels", "se", "exclude", "depthwise")


class ConvSE(nn.Module):
    """A Conv2d followed by an SE module over its output channels; added by :func:`add_se`."""

    def __init__(self, conv: nn.Conv2d, se: SqueezeExcite):
        super().__init__()
        self.conv = conv
        self.se = se

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The conv's output is a temporary (unless a hook on the conv keeps it): without autograd the
        # scale may then run in place.
        return se_tail(self.se, self.conv(x), inplace=not self.conv._forward_hooks)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            modules = self.__dict__.get("_modules", {})
            if "conv" in modules and not name.startswith("__"):
                return getattr(modules["conv"], name)
            raise


def _is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels


def _resolve_se(se, latent_channels) -> SEConfig:
    if isinstance(se, SEConfig):
        explicit = {k for k in ("reduction", "latent_channels") if k in se.model_fields_set}
        data = se.model_dump()
    elif se is None or isinstance(se, (str, dict)) or se is True:
        data = {} if se in (None, True) else ({"variant": se} if isinstance(se, str) else dict(se))
        explicit = {k for k in ("reduction", "latent_channels") if data.get(k) is not None}
    else:
        raise UserError(f"se must be an SEConfig, a mapping of SE options or a variant name, got {se!r}",
                        field="surgery.se")
    if latent_channels is not None:
        if explicit:
            raise UserError(f"the SE width is given twice: latent_channels={latent_channels!r} and "
                            f"se {sorted(explicit)}", field="surgery.latent_channels",
                            fix="pass latent_channels=None to use the width in se")
        if (isinstance(latent_channels, bool) or not isinstance(latent_channels, (int, float))
                or not (latent_channels >= 1 or 0 < latent_channels < 1)
                or (isinstance(latent_channels, float) and latent_channels > 1
                    and not latent_channels.is_integer())):
            raise UserError(f"latent_channels={latent_channels!r} gives no hidden width",
                            field="surgery.latent_channels",
                            fix="an int >= 1 (a count) or a float in (0, 1) (a fraction of the channels)")
        data["latent_channels"] = latent_channels
    cfg = make_se_config(data)
    if cfg.position != "standard":
        raise UserError(f"SE position {cfg.position!r} does not exist in surgery (SE goes after a conv)",
                        field="surgery.se.position", fix="allowed here: 'standard'")
    return cfg


def _exclusions(exclude) -> tuple[list[str], tuple[type, ...]]:
    if isinstance(exclude, (str, type)):
        exclude = (exclude,)
    try:
        items = list(exclude)
    except TypeError:
        raise UserError(f"exclude must be a list of name patterns or module classes, got {exclude!r}",
                        field="surgery.exclude") from None
    patterns = [e for e in items if isinstance(e, str)]
    types = tuple(e for e in items if isinstance(e, type) and issubclass(e, nn.Module))
    bad = [e for e in items if not isinstance(e, str) and e not in types]
    if bad:
        raise UserError(f"exclude takes module-name patterns (str) or nn.Module classes, not {bad!r}",
                        field="surgery.exclude")
    return patterns, types


def add_se(model: nn.Module, *, min_channels: int = 128,
           latent_channels: Optional[Union[int, float]] = 64, se=None,
           exclude: Iterable[Union[str, type]] = (), depthwise: bool = True) -> int:
    """Put an SE module after every qualifying Conv2d of `model` (in place); return how many were added.

    See the module docstring for the options. Bad arguments raise UserError."""
    if not isinstance(model, nn.Module):
        raise UserError(f"add_se needs an nn.Module, got {type(model).__name__}", field="model")
    if isinstance(min_channels, bool) or not isinstance(min_channels, int) or min_channels < 0:
        raise UserError(f"min_channels must be an int >= 0, got {min_channels!r}",
                        field="surgery.min_channels")
    if not isinstance(depthwise, bool):
        raise UserError(f"depthwise must be true or false, got {depthwise!r}", field="surgery.depthwise")
    cfg = _resolve_se(se, latent_channels)
    patterns, types = _exclusions(exclude)

    def excluded(path: list[str], chain: list[nn.Module]) -> bool:
        if types and any(isinstance(m, types) for m in chain):
            return True
        names = [".".join(path[:i]) for i in range(1, len(path) + 1)]
        return any(fnmatch.fnmatchcase(n, p) for n in names for p in patterns)

    todo: list[tuple[nn.Module, str, nn.Conv2d]] = []
    seen: set[int] = set()

    def walk(module: nn.Module, path: list[str], chain: list[nn.Module]) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        for name, child in list(module._modules.items()):  # every slot, shared modules too
            if child is None or isinstance(child, ConvSE):
                continue  # what surgery already did
            here, below = [*path, name], [*chain, child]
            if isinstance(child, nn.Conv2d):
                if (min(child.in_channels, child.out_channels) >= min_channels
                        and (depthwise or not _is_depthwise(child)) and not excluded(here, below)):
                    todo.append((module, name, child))
                continue
            walk(child, here, below)

    walk(model, [], [model])
    wrapped: dict[int, ConvSE] = {}
    for parent, name, conv in todo:
        if id(conv) not in wrapped:
            se_mod = SqueezeExcite(conv.out_channels, cfg)
            weight = getattr(conv, "weight", None)
            if isinstance(weight, torch.Tensor):
                se_mod = se_mod.to(device=weight.device, dtype=weight.dtype)
            wrapped[id(conv)] = ConvSE(conv, se_mod)
        setattr(parent, name, wrapped[id(conv)])
    return len(wrapped)


def apply_surgery(model: nn.Module, cfg: Optional[dict]) -> int:
    """`add_se` from a spec's mapping, e.g. ``{'min_channels': 128, 'latent_channels': 64}``; None or an
    empty mapping adds nothing. Unknown keys raise UserError naming the allowed ones."""
    if not cfg:
        return 0
    if not isinstance(cfg, dict):
        raise UserError(f"surgery must be a mapping of options, got {cfg!r}", field="surgery",
                        fix=f"allowed keys: {', '.join(SURGERY_OPTIONS)}")
    unknown = sorted(set(cfg) - set(SURGERY_OPTIONS))
    if unknown:
        raise UserError(f"unknown surgery option(s) {unknown}", field="surgery",
                        fix=f"allowed: {', '.join(SURGERY_OPTIONS)}")
    return add_se(model, **cfg)


def surgery_modules(model: nn.Module) -> dict[str, ConvSE]:
    """Every ConvSE of `model` by its module path."""
    return {name: m for name, m in model.named_modules() if isinstance(m, ConvSE)}


__all__ = ["ConvSE", "SURGERY_OPTIONS", "add_se", "apply_surgery", "surgery_modules"]
