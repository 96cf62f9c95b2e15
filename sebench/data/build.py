"""The one entry point the training engine calls: a DataCfg in, train and test loaders out."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch

from sebench.data.folder import folder_loaders
from sebench.data.loader import ArrayLoader
from sebench.data.registry import DatasetInfo, get_info, load_arrays, subset
from sebench.data.sources import PATH_FIX
from sebench.errors import UserError

# Subsets are drawn with a fixed seed, not the run's: every seed of an experiment then trains and tests on
# the same images, so the "[train n, test m]" label names one data set and paired comparisons stay paired.
SUBSET_SEED = 0


class DataSettings(Protocol):
    """What build_loaders reads of a run's data settings: spec.DataCfg, typed by its shape because the
    dependency runs the other way (spec checks dataset names against this package's registry)."""
    name: str
    augment: str
    image_size: int | None
    train_subset: int | None
    test_subset: int | None
    cutout: int | None


class EpochIterable(Protocol):
    def set_epoch(self, epoch: int) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self): ...


@dataclass(frozen=True)
class Loaders:
    """Train and test batches plus what a result must record about the data.

    `train`/`test` yield (images, labels) and have set_epoch(e) and len() (batches; per rank when
    distributed). `label` is the data-variant string, with subset sizes when a subset is used.
    """

    train: EpochIterable
    test: EpochIterable
    info: DatasetInfo
    num_classes: int
    classes: list[str]
    num_train: int
    num_test: int
    label: str
    source: str = ""  # where the pixels came from (archive file and sha256, folder): the run records it


def build_loaders(data_cfg: DataSettings, *, batch_size: int, eval_batch_size: int,
                  device: str | torch.device, seed: int, path: str | os.PathLike | None = None,
                  cache_dir: str | os.PathLike | None = None, num_workers: int = 2,
                  download: bool = False, rank: int = 0, world_size: int = 1) -> Loaders:
    """Loaders for `data_cfg`: 'array' data as ArrayLoaders on `device`, 'folder' data via DataLoaders.

    `seed` drives the shuffling and augmentation (per epoch, see ArrayLoader); `path`, `cache_dir`,
    `num_workers` and `download` come from the run's execution settings. `batch_size` is the global
    batch: with `world_size` > 1 processes, this one (`rank`) loads its share of every batch
    (batch_size / world_size training images; the folder pipeline needs an initialised process group).
    """
    if world_size > 1 and batch_size % world_size:
        raise UserError(f"the batch of {batch_size} does not split evenly over {world_size} processes",
                        field="batch_size", fix=f"use a multiple of {world_size}, or another process count")
    info = get_info(data_cfg.name)
    subsetted = data_cfg.train_subset is not None or data_cfg.test_subset is not None
    if info.kind == "folder":
        if path is None:
            raise UserError(f"dataset {info.name!r} needs the root of its folder tree", field="data.name",
                            fix=PATH_FIX)
        if data_cfg.augment != "rrc_flip":  # the folder pipeline is the ImageNet recipe and nothing else
            raise UserError(f"augment {data_cfg.augment!r} is not available for folder data",
                            field="data.augment", fix="use 'rrc_flip'")
        if data_cfg.cutout is not None:
            raise UserError("cutout is not available for folder data (the in-memory loader applies it)",
                            field="data.cutout", fix="remove data.cutout")
        # The folder sampler interleaves ranks (rank r takes every world_size-th position), so rank r's
        # batch s of batch_size / world_size images together with the other ranks' is global batch s.
        distributed = world_size > 1
        train, test, classes = folder_loaders(
            path, batch_size=batch_size // world_size, eval_batch_size=-(-eval_batch_size // world_size),
            workers=num_workers,
            image_size=data_cfg.image_size or info.image_size, seed=seed, distributed=distributed,
            train_subset=data_cfg.train_subset, test_subset=data_cfg.test_subset, subset_seed=SUBSET_SEED)
        info = replace(info, label=f"ImageFolder({Path(path).expanduser().resolve().name})",
                       num_classes=len(classes))
        num_train, num_test = len(train.dataset), len(test.dataset)
        source = f"image folder {Path(path).expanduser().resolve()}"
    else:
        data = load_arrays(info.name, path=path, cache_dir=cache_dir, download=download)
        if subsetted:
            data = subset(data, train=data_cfg.train_subset, test=data_cfg.test_subset, seed=SUBSET_SEED)
        info, classes = data.info, data.classes
        common = dict(device=device, mean=info.mean, std=info.std, seed=seed, augment=data_cfg.augment,
                      image_size=data_cfg.image_size, rank=rank, world_size=world_size,
                      cutout=data_cfg.cutout)
        # A last training batch of one image (per process) would break BatchNorm (a single value per
        # channel): drop it in that case only (min_last=2), so every other data set keeps every image in
        # every epoch (with several processes, up to world_size - 1 images of the last batch are cut).
        train = ArrayLoader(data.train_x, data.train_y, batch_size=batch_size, train=True, min_last=2,
                            **common)
        test = ArrayLoader(data.test_x, data.test_y, batch_size=eval_batch_size, train=False, **common)
        num_train, num_test = len(data.train_y), len(data.test_y)
        source = data.source

    label = f"{info.label} [train {num_train}, test {num_test}]" if subsetted else info.label
    return Loaders(train=train, test=test, info=info, num_classes=len(classes), classes=classes,
                   num_train=num_train, num_test=num_test, label=label, source=source)
