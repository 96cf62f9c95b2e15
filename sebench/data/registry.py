"""The dataset registry: every name a spec may use, what it is (label, classes, normalization), and how to
load the in-memory ones into uint8 tensors."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from sebench.data.archive import load_archive
from sebench.data.sources import PATH_FIX, Splits, embedded_splits, real_splits, synthetic_splits
from sebench.errors import UserError, choice_error

Triple = tuple[float, float, float]


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is. `label` is the data-variant string every result carries."""

    name: str
    label: str
    num_classes: int | None  # None: read from the folder tree ('imagefolder')
    image_size: int  # native side length (for 'folder' data, the default training size)
    kind: Literal["array", "folder"]  # array: held in memory as uint8; folder: ImageFolder tree on disk
    mean: Triple  # per-channel normalization on [0, 1] pixels
    std: Triple
    needs_path: bool
    description: str
    splits: tuple[int, int] | None = None  # (train, test) images, where fixed; for cost estimates


# The JPEG mirror's statistics are measured on its own decoded training set: they differ slightly from the
# lossless CIFAR-10 values (std especially), and the embedded subset uses the same ones, so a model sees
# identically normalized pixels whichever variant of the mirror it was trained on.
_JPEG_MEAN, _JPEG_STD = (0.4913, 0.4821, 0.4465), (0.2452, 0.2428, 0.2606)
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

DATASETS: dict[str, DatasetInfo] = {d.name: d for d in (
    DatasetInfo("cifar10", "CIFAR-10", 10, 32, "array", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
                False, "CIFAR-10 (the original pixels): the data path is the lossless archive "
                "cifar10-lossless.tar.xz, or torchvision's folder", (50000, 10000)),
    DatasetInfo("cifar100", "CIFAR-100", 100, 32, "array", (0.5071, 0.4865, 0.4409),
                (0.2673, 0.2564, 0.2762), False, "CIFAR-100 (fine labels): the data path is the lossless "
                "archive cifar100-lossless.tar.xz, or torchvision's folder", (50000, 10000)),
    DatasetInfo("svhn", "SVHN", 10, 32, "array", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                False, "SVHN train/test (no extra split) through torchvision; needs scipy", (73257, 26032)),
    DatasetInfo("cifar10-jpeg", "CIFAR-10 (JPEG q75 mirror)", 10, 32, "array", _JPEG_MEAN, _JPEG_STD, True,
                "CIFAR-10 re-encoded as JPEG q75, from the ImageFolder archive cifar10-jpeg.tar.xz", (50000, 10000)),
    DatasetInfo("cifar10-embedded", "CIFAR-10 (JPEG q75 mirror, embedded subset)", 10, 32, "array",
                _JPEG_MEAN, _JPEG_STD, False,
                "500 train + 100 test images per class of the JPEG mirror, shipped with the package", (5000, 1000)),
    DatasetInfo("synthetic", "synthetic", 10, 32, "array", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), False,
                "seeded class patterns plus noise, for tests (sizes set by load options)"),
    DatasetInfo("imagefolder", "ImageFolder", None, 224, "folder", _IMAGENET_MEAN, _IMAGENET_STD, True,
                "an ImageNet-layout tree root/{train,val}/<class>/<image>; label ImageFolder(<root name>)"),
)}


@dataclass(frozen=True)
class ArrayData:
    """A dataset in memory: uint8 images [N,3,H,W] (contiguous) and int64 labels [N] per split."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    info: DatasetInfo
    source: str = ""  # where the pixels came from (archive and sha256, folder, ...): recorded with each run


def get_info(name: str) -> DatasetInfo:
    if name not in DATASETS:
        raise choice_error("dataset", name, DATASETS, field="data.name")
    return DATASETS[name]


def data_path_variable(name: str) -> str:
    """The environment variable that gives a dataset's default data path: SEBENCH_CIFAR10,
    SEBENCH_CIFAR100, SEBENCH_CIFAR10_JPEG, ... (the dataset name upper-cased, '-' as '_')."""
    return "SEBENCH_" + name.upper().replace("-", "_")


def default_data_path(name: str) -> str | None:
    """$SEBENCH_<DATASET> when set (e.g. SEBENCH_CIFAR10=/data/cifar10-lossless.tar.xz), else None. Read
    when runs are planned, never at train time: the chosen path is recorded in the run's execution block."""
    return os.environ.get(data_path_variable(name)) or None


def check_data_path(name: str, path: str | os.PathLike | None, download: bool = False,
                    where: str | None = None) -> None:
    """Before a sweep plans or launches anything: the data set's path is given where it needs one and
    exists where given (a torchvision folder that --download will create is allowed). The contents are
    checked when a run reads them (sha256, layout)."""
    info = get_info(name)
    if info.needs_path and path is None:
        raise UserError(f"dataset {name!r} needs a path: {info.description}", where=where, field="data.name",
                        fix=f"{PATH_FIX}, or set ${data_path_variable(name)}")
    if path is not None and not download and not Path(path).expanduser().exists():
        raise UserError(f"the data path of dataset {name!r} does not exist: {path}", where=where,
                        field="execution.data_path",
                        fix=f"{PATH_FIX} (or ${data_path_variable(name)}) naming an existing file or folder")


def load_arrays(name: str, *, path: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None, download: bool = False, **kw: Any) -> ArrayData:
    """Load an 'array' dataset. `kw` goes to the source: `expected_sha256`/`layout` for cifar10-jpeg,
    `train_per_class`/`test_per_class`/`image_size`/`num_classes`/`seed` for synthetic."""
    info = get_info(name)
    if info.kind != "array":
        raise UserError(f"dataset {name!r} is read from disk per batch, not loaded into memory",
                        field="data.name", fix="build its loaders with build_loaders")
    if info.needs_path and path is None:
        raise UserError(f"dataset {name!r} needs a path: {info.description}", field="data.name",
                        fix=PATH_FIX)
    if kw and name not in ("cifar10-jpeg", "synthetic"):
        raise TypeError(f"load options {sorted(kw)} not accepted by dataset {name!r}")
    if name == "cifar10-jpeg":
        a = load_archive(path, cache_dir=cache_dir, **kw)
        splits = Splits(a.train_x, a.train_y, a.test_x, a.test_y, a.classes,
                        source=f"{Path(path).name} (sha256 {a.sha256})")
    elif name == "cifar10-embedded":
        splits = embedded_splits()
    elif name == "synthetic":
        splits = synthetic_splits(**kw)
        info = replace(info, image_size=splits.train_x.shape[-1], num_classes=len(splits.classes))
    else:
        splits = real_splits(name, path, cache_dir=cache_dir, download=download)

    def tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(dtype)

    return ArrayData(tensor(splits.train_x, torch.uint8), tensor(splits.train_y, torch.int64),
                     tensor(splits.test_x, torch.uint8), tensor(splits.test_y, torch.int64),
                     list(splits.classes), info, splits.source)


def stratified_indices(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n indices balanced across classes (counts differ by at most one while every class has enough),
    chosen by a seeded shuffle, returned in ascending order.

    Classes are visited round-robin in shuffled order: sorting the shuffled samples by their rank within
    their class takes the first of every class, then the second of every class, and so on; a class that
    runs out simply drops from the rotation, so imbalanced sets (SVHN) still yield exactly n.
    """
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    lab = labels[perm]
    by_class = torch.argsort(lab, stable=True)  # grouped by class, shuffled order kept within a class
    counts = torch.bincount(lab)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty_like(lab)
    rank[by_class] = torch.arange(len(lab)) - starts[lab[by_class]]
    return perm[torch.argsort(rank, stable=True)[:n]].sort().values


def subset(data: ArrayData, *, train: int | None = None, test: int | None = None, seed: int = 0) -> ArrayData:
    """A seeded, class-balanced subset of each split (None keeps the split whole)."""
    out = {}
    for split, n in (("train", train), ("test", test)):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        if n is not None:
            if n > len(y):
                raise UserError(f"a {split} subset of {n} exceeds the {len(y)} {split} images of "
                                f"{data.info.label}", field=f"data.{split}_subset")
            idx = stratified_indices(y, n, seed)
            x, y = x[idx].contiguous(), y[idx]
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    return ArrayData(classes=data.classes, info=data.info, source=data.source, **out)
