"""The Squeeze-and-Excitation family.

SE (Hu et al., sources 001/002/003): s = gate(W_k ... relu(W_1 squeeze(x))), y = x * s (per channel).

* squeeze: ``avg`` (the paper's global average pooling), ``max`` (ablation), ``none`` (NoSqueeze: the
  excitation MLP runs as 1x1 convolutions on the full map, so the gate is per position; source 003 gives
  it the same parameters as SE but 4.27 GFLOPs for ResNet-50).
* gate: ``sigmoid`` (paper), ``tanh``, ``relu`` (excitation-operator ablation).
* hidden width h: ``C // reduction`` (at least 1; never rounded to a multiple of 8 as timm does), or
  ``latent_channels`` (source 000): an int count, or a fraction of C when < 1 (floor, at least 1).
  The widths actually used are in ``extra_repr`` and ``SqueezeExcite.widths``.

The four variants of arXiv 2304.06502 (source 004). The paper gives no equations, only prose and figures
that the text omits; our reading of its section 4 ("Variations of SE"), with h = C // r:

* ``se``                        C -> h -> C              (the SE module)
* ``slow_squeeze``              C -> 2h -> h -> C        "the squeeze is reduced in two steps ... half of the
                                                          reduction first, then the remaining half"; the
                                                          excitation is the usual single step.
* ``slow_excite``               C -> h -> 2h -> C        "the squeezed result is excited to reduction//2,
                                                          then to the original shape".
* ``slow_squeeze_slow_excite``  C -> 2h -> h -> 2h -> C  both of the above.
* ``bump``                      C -> h -> h -> C         "squeeze-learn-excite": one more fully connected
                                                          layer of the squeezed width in the middle.

Every hidden layer is followed by ReLU; the last layer by the gate.

Implementation (``SqueezeExcite.impl``): ``'fused'`` (default) runs the channel scale, and in a residual
block the add and the ReLU that follow it, as one autograd node with a hand-written backward
(``sebench.layers.fused``); ``'reference'`` runs the textbook ops (``x * s``, ``+``, ``relu``). Both compute
the same function (tested to 1e-6 forward and backward), so the choice is an execution detail like
channels_last: it is not part of SEConfig (run ids and checkpoints do not depend on it). Switch a built
model with :func:`set_se_impl`. ``sebench.layers.fused`` owns the protocol: residual blocks and every
other placement call its ``se_tail``.

Excitation form (``SqueezeExcite.form``): how the MLP's layers run on the same ``nn.Linear`` parameters:
``'linear'`` (the modules), ``'conv1x1'`` (``F.conv2d`` on the pooled [N, C, 1, 1], as timm),
``'functional'`` (``F.linear`` without module dispatch) or ``'mm'`` (``torch.mm`` + bias add); ``'auto'``
(default) takes ``fused.DEFAULT_FORM`` of the input's device type. Another execution detail: same
function (tested), same state_dict, not part of SEConfig or the run id. Switch a built model with
:func:`set_se_form` (a run: ``execution.se_form``); ``sebench.layers.fused`` says what each form does.
"""

from __future__ import annotations

from typing import Callable, Literal, Optional, Union

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from sebench.errors import UserError, choice_error
from sebench.layers import fused

Variant = Literal["se", "slow_squeeze", "slow_excite", "slow_squeeze_slow_excite", "bump"]
Squeeze = Literal["avg", "max", "none"]
GateName = Literal["sigmoid", "tanh", "relu"]
Position = Literal["standard", "pre", "post", "identity", "after_3x3"]
Form = Literal["auto", "linear", "conv1x1", "functional", "mm"]  # "auto" and fused.FORMS (tested)


# Hidden widths of each variant as multiples of h (see the module docstring).
VARIANT_HIDDEN: dict[str, tuple[int, ...]] = {
    "se": (1,),
    "slow_squeeze": (2, 1),
    "slow_excite": (1, 2),
    "slow_squeeze_slow_excite": (2, 1, 2),
    "bump": (1, 1),
}
SQUEEZES = ("avg", "max", "none")
GATES = ("sigmoid", "tanh", "relu")
POSITIONS = ("standard", "pre", "post", "identity", "after_3x3")


class SEConfig(BaseModel):
    """Everything that defines one SE module and where a residual block puts it. Frozen and hashable."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    variant: Variant = "se"
    reduction: int = Field(16, ge=1)
    latent_channels: Optional[Union[int, float]] = None
    squeeze: Squeeze = "avg"
    gate: GateName = "sigmoid"
    bias: bool = True
    position: Position = "standard"

    @field_validator("latent_channels")
    @classmethod
    def _latent_ok(cls, v):
        if v is None:
            return v
        if isinstance(v, bool):
            raise ValueError("latent_channels must be a positive int or a fraction in (0, 1)")
        if isinstance(v, float) and v.is_integer() and v >= 1:
            return int(v)
        if isinstance(v, int) and v >= 1:
            return v
        if isinstance(v, float) and 0 < v < 1:
            return v
        raise ValueError(f"latent_channels={v!r} gives no hidden channels: use an int >= 1 "
                         "(a count) or a float in (0, 1) (a fraction of the channels)")

    def hidden(self, channels: int) -> int:
        """h for an SE module on `channels` channels (see the module docstring)."""
        if self.latent_channels is None:
            h = channels // self.reduction
        elif isinstance(self.latent_channels, int):
            h = self.latent_channels
        else:
            h = int(channels * self.latent_channels)
        return max(1, h)

    def widths(self, channels: int) -> list[int]:
        h = self.hidden(channels)
        return [channels, *(m * h for m in VARIANT_HIDDEN[self.variant]), channels]

    def short(self) -> str:
        """Compact label, e.g. 'se r16 avg sigmoid standard'."""
        width = (f"r{self.reduction}" if self.latent_channels is None
                 else f"latent{self.latent_channels}")
        bits = [self.variant, width, self.squeeze, self.gate, self.position]
        if not self.bias:
            bits.append("nobias")
        return " ".join(bits)


def make_se_config(se=None, **overrides) -> Optional[SEConfig]:
    """Normalise what users pass as `se=`: None/False (no SE), True/'se'/a variant name, a dict, or an
    SEConfig; keyword overrides on top. Bad values raise UserError naming the allowed ones."""
    if se is None or se is False:
        if overrides:
            se = {}
        else:
            return None
    if se is True:
        se = {}
    if isinstance(se, str):
        se = {"variant": se}
    if isinstance(se, SEConfig):
        se = se.model_dump()
    if not isinstance(se, dict):
        raise UserError(f"se must be a variant name, a mapping of SE options or None, got {se!r}",
                        field="se")
    data = {**se, **{k: v for k, v in overrides.items() if v is not None}}
    return validate_se_dict(data)


def validate_se_dict(data: dict, where: str | None = None) -> SEConfig:
    """Build an SEConfig, turning pydantic's errors into one UserError with the allowed values."""
    allowed = {"variant": tuple(VARIANT_HIDDEN), "squeeze": SQUEEZES, "gate": GATES,
               "position": POSITIONS}
    for key, values in allowed.items():
        if key in data and data[key] not in values:
            raise choice_error(key.replace("_", " "), data[key], values, where=where, field=f"se.{key}")
    unknown = set(data) - set(SEConfig.model_fields)
    if unknown:
        raise UserError(f"unknown SE option(s) {sorted(unknown)}", where=where, field="se",
                        fix=f"allowed: {', '.join(SEConfig.model_fields)}")
    try:
        return SEConfig(**data)
    except Exception as exc:  # pydantic.ValidationError
        errors = getattr(exc, "errors", None)
        if errors:
            e = errors()[0]
            field = "se." + ".".join(str(p) for p in e["loc"])
            raise UserError(e["msg"], where=where, field=field) from None
        raise


class Gate(nn.Module):
    """The excitation's last nonlinearity, as its own module so hooks can read the gate values."""

    def __init__(self, kind: str):
        super().__init__()
        if kind not in GATES:
            raise choice_error("gate", kind, GATES)
        self.kind = kind
        self.fn: Callable[[torch.Tensor], torch.Tensor] = {
            "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}[kind]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.kind


IMPLS, DEFAULT_IMPL = fused.IMPLS, fused.DEFAULT_IMPL
FORMS, DEFAULT_FORM, AUTO_FORM = fused.FORMS, fused.DEFAULT_FORM, fused.AUTO_FORM


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise choice_error("SE implementation", impl, IMPLS, field="impl")
    return impl


def _check_form(form: str) -> str:
    if form != AUTO_FORM and form not in FORMS:
        raise choice_error("SE excitation form", form, (AUTO_FORM, *FORMS), field="form")
    return form


class SqueezeExcite(nn.Module):
    """One SE module: ``forward(x) = x * excite(x)``.

    With squeeze avg/max the MLP runs as matmuls on [N, C] (nn.Linear) and the gate is [N, C]; with
    squeeze ``none`` it runs as 1x1 convs on [N, C, H, W] and the gate has the map's shape.
    `tag` names the module as the paper does (``SE_<stage>_<block>``) once a model places it.
    `impl`: ``'fused'`` or ``'reference'``; `form`: the excitation form, ``'auto'`` by default (see the
    module docstring). Code that places the module calls
    ``sebench.layers.fused.se_tail(se, x, shortcut, relu=...)`` for ``[relu](se(x) [+ shortcut])``.
    """

    def __init__(self, channels: int, cfg: Optional[SEConfig] = None, *, impl: Optional[str] = None,
                 form: Optional[str] = None, **overrides):
        super().__init__()
        self.impl = _check_impl(impl or DEFAULT_IMPL)
        self.form = _check_form(form or AUTO_FORM)
        cfg = make_se_config(cfg if cfg is not None else {}, **overrides)
        self.cfg = cfg
        self.channels = channels
        self.widths = cfg.widths(channels)
        self.squeeze = cfg.squeeze
        layer = nn.Linear if cfg.squeeze != "none" else (
            lambda i, o, bias: nn.Conv2d(i, o, 1, bias=bias))
        mods: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(self.widths[:-1], self.widths[1:])):
            mods.append(layer(w_in, w_out, bias=cfg.bias))
            if i < len(self.widths) - 2:
                mods.append(nn.ReLU(inplace=True))
        self.mlp = nn.Sequential(*mods)
        self.gate = Gate(cfg.gate)
        self.tag: Optional[str] = None

    def squeeze_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.squeeze == "avg":
            return x.mean((2, 3))
        if self.squeeze == "max":
            return x.amax((2, 3))
        return x

    def excite(self, x: torch.Tensor) -> torch.Tensor:
        """The gate values: [N, C] (or [N, C, H, W] for NoSqueeze), in the module's excitation form."""
        return fused.excite(self, x)

    def scale_shape(self, s: torch.Tensor) -> torch.Tensor:
        return s if s.dim() == 4 else s[:, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused.se_forward(self, x)

    def reference_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x * excite(x)`` as plain ops, whatever `impl` says."""
        return x * self.scale_shape(self.excite(x)).to(x.dtype)

    def extra_repr(self) -> str:
        tag = f"{self.tag}, " if self.tag else ""
        return (f"{tag}widths={'->'.join(map(str, self.widths))}, variant={self.cfg.variant}, "
                f"squeeze={self.squeeze}, gate={self.cfg.gate}, bias={self.cfg.bias}")


# name -> constructor(channels, **options). Every constructor takes the channel count first (as timm's
# attention layers do), so any of them can be handed to code that builds attention by name.
SE_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    name: (lambda channels, _v=name, **kw: SqueezeExcite(channels, variant=_v, **kw))
    for name in VARIANT_HIDDEN
}


def create_se(name: str, channels: int, **options) -> nn.Module:
    """Build a registered SE layer by name, e.g. ``create_se('bump', 256, reduction=8)``."""
    if name not in SE_REGISTRY:
        raise choice_error("SE variant", name, SE_REGISTRY)
    return SE_REGISTRY[name](channels, **options)


def set_se_impl(model: nn.Module, impl: str) -> int:
    """Switch every SE module of `model` to ``'fused'`` or ``'reference'``; returns how many."""
    _check_impl(impl)
    mods = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    for m in mods:
        m.impl = impl
    return len(mods)


def set_se_form(model: nn.Module, form: str) -> int:
    """Switch every SE module of `model` to an excitation form (one of ``FORMS``, or ``'auto'``: the
    input's device type's default, ``DEFAULT_FORM``); returns how many. Parameters are untouched."""
    _check_form(form)
    mods = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    for m in mods:
        m.form = form
    return len(mods)


def se_modules(model: nn.Module) -> dict[str, SqueezeExcite]:
    """Every SE module of a model, by its paper-style tag (or module path when untagged), in order."""
    return {(m.tag or name): m for name, m in model.named_modules() if isinstance(m, SqueezeExcite)}
