"""Run configurations (and, in time, the experiment-spec schema that expands into them).

A RunConfig is complete and frozen: everything that affects the numbers is in it. Its `run_id` is a hash
of that content, so a sweep re-run finds finished runs. `execution` holds how a run is executed (device,
threads, data path, progress bars): recorded in env.json, but not part of the identity, because moving a
run to another machine or path must not make it a different experiment.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from sebench.layers.se import SEConfig


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelCfg(_Strict):
    name: str
    num_classes: Optional[int] = Field(None, ge=1)  # None: the dataset's class count
    se: Optional[SEConfig] = None
    se_stages: Optional[tuple[int, ...]] = None  # None: every stage
    kwargs: dict[str, Any] = Field(default_factory=dict)  # extra constructor options (e.g. stride_in)


class DataCfg(_Strict):
    name: str = "cifar10-embedded"
    train_subset: Optional[int] = Field(None, ge=1)  # first-N per split after a seeded shuffle
    test_subset: Optional[int] = Field(None, ge=1)
    # crop_flip: random crop with 4-pixel padding + horizontal flip (He et al. CIFAR recipe);
    # rrc_flip: RandomResizedCrop(image_size) + flip, eval resize(image_size*8/7) + center crop (004's
    # ResNet-18 recipe at 224, and the ImageNet recipe); none: normalization only.
    augment: Literal["crop_flip", "rrc_flip", "none"] = "crop_flip"
    image_size: Optional[int] = Field(None, ge=8)  # None: native size


class OptimCfg(_Strict):
    name: Literal["sgd", "adadelta"] = "sgd"
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0)
    nesterov: bool = False
    weight_decay: float = Field(1e-4, ge=0)
    wd_exclude_bn_bias: bool = False
    schedule: Literal["multistep", "step", "cosine", "constant"] = "multistep"
    milestones: tuple[float, ...] = (0.5, 0.75)  # multistep: fractions of the epochs
    gamma: float = Field(0.1, gt=0)  # multistep / step factor
    step_epochs: int = Field(1, ge=1)  # step: decay every n epochs (004: x0.7 every epoch)
    warmup_epochs: float = Field(0.0, ge=0)
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class ExecutionCfg(_Strict):
    """How to run, not what: excluded from run_id, recorded in env.json."""

    device: str = "auto"  # auto: cuda if available, else cpu
    threads: Optional[int] = Field(None, ge=1)  # CPU intra-op threads; None: all cores
    data_path: Optional[str] = None  # archive/root for datasets that need one
    cache_dir: Optional[str] = None
    num_workers: int = Field(2, ge=0)  # DataLoader workers for ImageFolder data
    progress: bool = True
    compile: bool = False  # torch.compile (same numbers up to float tolerance)
    deterministic: bool = True  # deterministic algorithms where the device allows


class RunConfig(_Strict):
    experiment: str = "adhoc"
    profile: str = "adhoc"
    labels: dict[str, str] = Field(default_factory=dict)  # sweep axis -> value label, for reports
    model: ModelCfg
    data: DataCfg = Field(default_factory=DataCfg)
    optim: OptimCfg = Field(default_factory=OptimCfg)
    epochs: int = Field(..., ge=1)
    batch_size: int = Field(128, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    seed: int = Field(0, ge=0)
    amp: Literal["off", "bf16", "fp16"] = "off"  # CUDA only; ignored (and recorded) on CPU
    channels_last: bool = False
    execution: ExecutionCfg = Field(default_factory=ExecutionCfg)

    def identity(self) -> dict:
        """The content that defines the numbers (everything but `execution` and the report labels)."""
        return self.model_dump(mode="json", exclude={"execution", "labels"})

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]
