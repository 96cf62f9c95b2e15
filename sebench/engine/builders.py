"""What a run is made of, built in one place (in the spirit of pycls's builders and timm's create_*
factories): the device, the precision, the model (with its SE and surgery), the optimiser, the schedule
and the loss, from a RunConfig that `spec.expand` validated when the run was planned. Nothing here
validates the config again; it only asks the machine what it can do (is CUDA there, does this CPU compute
bf16 natively).

"auto" is resolved here and only here (:func:`device_kind`): the CLI, the runner, the launchers and the
process group ask this module what it means on this machine (or, for a cluster's node, on that node).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from sebench.engine import distributed
from sebench.engine.distributed import World
from sebench.engine.env import cpu_bf16_flag
from sebench.engine.optim import build_optimizer, build_scheduler
from sebench.errors import UserError
from sebench.layers.se import set_se_form
from sebench.models import build_model
from sebench.spec import RunConfig
from sebench.surgery import apply_surgery

AMP_DTYPES = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def device_kind(name: str = "auto", cuda_available: Optional[bool] = None) -> str:
    """The device a name means: 'auto' is 'cuda' where CUDA is available (on this machine, or as
    `cuda_available` says for another one, e.g. a cluster node with GPUs), else 'cpu'; any other name
    is returned as it is (resolve_device checks it when a run starts)."""
    if name != "auto":
        return name
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    return "cuda" if cuda_available else "cpu"


def resolve_device(name: str = "auto", world: Optional[World] = None) -> torch.device:
    """The torch device of a run: an unusable explicit choice is the user's to fix. In a data-parallel
    run each process takes the GPU of its local rank."""
    world = world or World()
    try:
        device = torch.device(device_kind(name))
    except RuntimeError:
        raise UserError(f"unknown device {name!r}", field="execution.device",
                        fix="use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if name != "auto" and device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("CUDA was requested but is not available", field="execution.device",
                            fix="use 'auto' or 'cpu'")
        if (device.index or 0) >= torch.cuda.device_count():
            raise UserError(f"there is no {device}: {torch.cuda.device_count()} CUDA device(s) visible",
                            field="execution.device", fix="use 'cuda' or a smaller index")
    if world.distributed and device.type == "cuda":
        if device.index is not None:
            raise UserError(f"{name!r} names one GPU, but each process of a data-parallel run takes the GPU "
                            "of its LOCAL_RANK", field="execution.device", fix="use 'cuda' or 'auto'")
        device = torch.device("cuda", distributed.cuda_index(world))
        torch.cuda.set_device(device)
    return device


def resolve_amp(amp: str, device: torch.device) -> Optional[torch.dtype]:
    """The autocast dtype of a run, or None for fp32. CUDA takes bf16 and fp16. A CPU takes bf16 only where
    it computes bf16 natively (env.cpu_bf16_flag: AVX512-BF16 or AMX); elsewhere autocast would emulate it,
    slower than fp32, so that is refused, as is fp16 on a CPU."""
    dtype = AMP_DTYPES[amp]
    if dtype is None or device.type == "cuda":
        return dtype
    if device.type == "cpu" and dtype is torch.bfloat16:
        if cpu_bf16_flag() is None:
            raise UserError("amp 'bf16' on this CPU would be emulated (no avx512_bf16 or amx_bf16 flag), "
                            "slower than fp32", field="amp",
                            fix="use amp: off here, or a CPU or GPU with native bf16")
        return dtype
    raise UserError(f"amp {amp!r} is not available on {device.type}", field="amp",
                    fix="use amp: off, or bf16 on a CPU with native bf16, or a CUDA device")


def amp_refusal(cfg: RunConfig, device: str = "auto") -> Optional[UserError]:
    """Why `device` would refuse the run's autocast dtype (see resolve_amp), or None when it takes it: the
    runner asks before it launches anything, so a sweep gets one message instead of a failure per run."""
    if cfg.amp == "off":
        return None
    try:
        resolve_amp(cfg.amp, torch.device(device_kind(device)))
    except UserError as exc:
        return exc
    return None


def build_run_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    """The model `cfg` trains, freshly initialised on the CPU (model, SE and surgery settings, and the SE
    excitation form of ``execution.se_form``): fit, the speed re-measurement and the excitation analysis
    (which loads a checkpoint into it) build it alike."""
    model = build_model(cfg.model.name, cfg.model.num_classes or num_classes, se=cfg.model.se,
                        se_stages=cfg.model.se_stages, **cfg.model.kwargs)
    if cfg.model.surgery is not None:  # source 000: SE after every large enough Conv2d
        sg = cfg.model.surgery
        apply_surgery(model, {"min_channels": sg.min_channels, "latent_channels": sg.latent_channels,
                              "se": {"variant": sg.variant, "squeeze": sg.squeeze, "gate": sg.gate,
                                     "bias": sg.bias}})
    set_se_form(model, cfg.execution.se_form)  # an execution detail: the state_dict is the same
    return model


def place(model: nn.Module, cfg: RunConfig, device: torch.device) -> nn.Module:
    """`model` on `device` in the run's memory layout."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


@dataclass
class Training:
    """What trains a built model: optimiser, per-step schedule, autocast dtype (None: fp32), the fp16
    gradient scaler (None otherwise) and the training loss."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    amp_dtype: Optional[torch.dtype]
    scaler: Optional[torch.amp.GradScaler]
    loss_fn: nn.Module

    @property
    def amp_used(self) -> str:
        """The precision as records name it: 'off', 'bfloat16' or 'float16'."""
        return str(self.amp_dtype).removeprefix("torch.") if self.amp_dtype is not None else "off"


def build_training(cfg: RunConfig, model: nn.Module, steps_per_epoch: int, device: torch.device) -> Training:
    """Optimiser, schedule, precision and loss of `cfg` for `model` (already placed on `device`)."""
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, cfg.epochs, steps_per_epoch)
    amp_dtype = resolve_amp(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype is torch.float16 else None
    return Training(optimizer, scheduler, amp_dtype, scaler,
                    nn.CrossEntropyLoss(label_smoothing=cfg.optim.label_smoothing))
