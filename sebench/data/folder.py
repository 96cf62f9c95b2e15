"""Loaders for ImageNet-layout trees (root/train/<class>/*, root/val/<class>/*), decoded per batch by
DataLoader workers with torchvision's standard ImageNet transforms.

Reproducibility does not rest on worker seeding: the sampler, running in the main process, draws each
epoch's order and one seed per sample from (seed, epoch); the dataset seeds the transform's RNG with that
sample seed. So a sample's crop and flip are the same whatever the worker count, with persistent workers
(which are never re-seeded between epochs), and after a resume.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from sebench.data.loader import epoch_seed
from sebench.data.registry import DATASETS, stratified_indices
from sebench.errors import UserError

_TREE = "root/train/<class>/<image> and root/val/<class>/<image> (ImageNet layout)"


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields (index, sample seed) pairs; the order (when shuffled) and the seeds depend on (seed, epoch).

    With world_size > 1 each rank takes every world_size-th position; `pad` repeats the first positions so
    every rank gets the same number of samples (training, where ranks step together), while evaluation
    leaves the shards unpadded so every image counts exactly once.
    """

    def __init__(self, n: int, *, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1,
                 pad: bool = False):
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _positions(self) -> range:
        total = -(-self.n // self.world_size) * self.world_size if self.pad else self.n
        return range(self.rank, total, self.world_size)

    def __len__(self) -> int:
        return len(self._positions())

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(self.n, generator=g) if self.shuffle else torch.arange(self.n)
        seeds = torch.randint(0, 1 << 62, (self.n,), generator=g)
        order, seeds = order.tolist(), seeds.tolist()
        for p in self._positions():
            yield order[p % self.n], seeds[p % self.n]


class SeededItems(Dataset):
    """dataset[(i, s)] = base[i] with torch's RNG seeded by s for the transform, then restored."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]):
        index, sample_seed = key
        with torch.random.fork_rng(devices=[]):  # with 0 workers this runs in the training process
            torch.manual_seed(sample_seed)
            return self.base[index]


class EpochDataLoader(DataLoader):
    """A DataLoader over an EpochSampler whose set_epoch also re-seeds the loader's own generator (which
    draws the workers' base seed), so nothing is drawn from the global RNG."""

    def __init__(self, dataset: Dataset, sampler: EpochSampler, **kw):
        super().__init__(SeededItems(dataset), sampler=sampler, generator=torch.Generator(), **kw)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(epoch_seed(self.sampler.seed, epoch))


def seed_worker(worker_id: int) -> None:
    """Seed numpy and `random` in a worker from its torch seed, for transforms that use them."""
    s = torch.initial_seed() % 2**32
    np.random.seed(s)
    random.seed(s)


def _image_folder(root: Path, split: str, transform):
    from torchvision.datasets import ImageFolder  # deferred: torchvision import is slow

    folder = root / split
    if not folder.is_dir():
        raise UserError(f"missing the {split}/ folder", where=str(root), fix=f"expected {_TREE}")
    try:
        return ImageFolder(str(folder), transform=transform)
    except FileNotFoundError as e:  # no class folders, or a class folder without images
        raise UserError(f"{e}", where=str(folder), fix=f"expected {_TREE}") from e


def _maybe_subset(ds, n: int | None, seed: int, split: str):
    if n is None:
        return ds
    if n > len(ds):
        raise UserError(f"a {split} subset of {n} exceeds the {len(ds)} {split} images",
                        field=f"data.{split}_subset")
    return Subset(ds, stratified_indices(torch.as_tensor(ds.targets), n, seed).tolist())


def folder_loaders(root: str | os.PathLike, *, batch_size: int, eval_batch_size: int, workers: int,
                   image_size: int = 224, seed: int, distributed: bool = False,
                   train_subset: int | None = None, test_subset: int | None = None, subset_seed: int = 0
                   ) -> tuple[EpochDataLoader, EpochDataLoader, list[str]]:
    """(train loader, eval loader, class names) for an ImageNet-layout tree.

    Train: RandomResizedCrop(image_size) + horizontal flip; eval: Resize(round(image_size*256/224)) +
    CenterCrop(image_size); both ToTensor + ImageNet normalization. `distributed` shards both across the
    initialized process group. Subsets are class-balanced and seeded by `subset_seed`.
    """
    from torchvision import transforms as T

    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError("not a directory", where=str(root), fix=f"expected {_TREE}")
    info = DATASETS["imagefolder"]
    norm = [T.ToTensor(), T.Normalize(info.mean, info.std)]
    train_ds = _image_folder(root, "train", T.Compose(
        [T.RandomResizedCrop(image_size), T.RandomHorizontalFlip(), *norm]))
    eval_ds = _image_folder(root, "val", T.Compose(
        [T.Resize(round(image_size * 256 / 224)), T.CenterCrop(image_size), *norm]))
    if eval_ds.classes != train_ds.classes:  # ImageFolder numbers classes per folder: they must agree
        raise UserError("val/ and train/ hold different class folders", where=str(root),
                        fix=f"expected {_TREE} with the same classes in both")
    classes = train_ds.classes
    train_ds = _maybe_subset(train_ds, train_subset, subset_seed, "train")
    eval_ds = _maybe_subset(eval_ds, test_subset, subset_seed, "test")

    rank, world = 0, 1
    if distributed:
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    common = dict(num_workers=workers, persistent_workers=workers > 0, worker_init_fn=seed_worker,
                  pin_memory=torch.cuda.is_available())
    sampler = EpochSampler(len(train_ds), seed=seed, shuffle=True, rank=rank, world_size=world, pad=True)
    # A last training batch of one image breaks BatchNorm in training mode: drop it in that case only, as
    # the in-memory loader does (min_last=2).
    train = EpochDataLoader(train_ds, sampler, batch_size=batch_size, drop_last=len(sampler) % batch_size == 1,
                            **common)
    evaluate = EpochDataLoader(eval_ds, EpochSampler(len(eval_ds), seed=seed, shuffle=False, rank=rank,
                                                     world_size=world), batch_size=eval_batch_size, **common)
    return train, evaluate, classes
