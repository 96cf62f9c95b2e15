"""In-memory loader for small-image data (airbench style): the whole split lives on the device as one uint8
tensor, and each batch is gathered, augmented and normalized there with batched tensor ops.

Every random choice of an epoch (order, crops, flips) is drawn up front from a CPU generator seeded by
(seed, epoch) alone. So epoch e yields exactly the same batches whether or not the run was resumed, on any
device, and the draws do not touch (or depend on) the global RNG the model uses.

Data-parallel runs shard by rank: every rank draws the same (seed, epoch) order and augmentation
parameters, and rank r takes the r-th contiguous slice of each global batch (batch_size is the global
batch, batch_size / world_size images per rank). The union of the ranks' batches at a step is the
single-process batch, image for image. Test batches are sliced the same way (unequal or empty slices are
fine there: evaluation sums counts across ranks).
"""

from __future__ import annotations

import hashlib
from typing import Iterator, Literal, Sequence

import torch

from sebench.data.augment import crop_flip, cutout, resize, resize_center_crop, resized_crop_flip, rrc_params

Augment = Literal["crop_flip", "rrc_flip", "none"]
AUGMENTS: tuple[str, ...] = ("crop_flip", "rrc_flip", "none")
CROP_PAD = 4  # He et al.'s CIFAR recipe: 4-pixel padding, random 32x32 crop


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed for (seed, epoch); hashed, so distinct pairs never share a stream."""
    digest = hashlib.sha256(f"sebench-data:{seed}:{epoch}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class ArrayLoader:
    """Batches of (float32 normalized NCHW images, int64 labels), both on `device`.

    train=True: shuffled and augmented per `augment`; train=False: in order, no randomness ('rrc_flip'
    then means resize + centre crop, the other modes only the optional resize). `image_size` resizes the
    output (None: native). Call set_epoch(e) before iterating epoch e.

    A last training batch smaller than batch_size is dropped with `drop_last`, or when it would give a
    rank fewer than `min_last` images; with several ranks it is cut to a multiple of world_size (the
    images cut are the last of that epoch's random order), so every rank takes the same number of images
    and DDP's mean of the ranks' mean gradients is the global batch's mean gradient.
    """

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, *, batch_size: int, train: bool,
                 device: str | torch.device, mean: Sequence[float], std: Sequence[float], seed: int,
                 augment: Augment = "crop_flip", image_size: int | None = None, drop_last: bool = False,
                 min_last: int = 1, rank: int = 0, world_size: int = 1, cutout: int | None = None):
        if x_uint8.dtype != torch.uint8 or x_uint8.dim() != 4 or len(x_uint8) != len(y):
            raise ValueError(f"expected uint8 images [N,C,H,W] and N labels, got {x_uint8.dtype} "
                             f"{tuple(x_uint8.shape)} and {tuple(y.shape)}")
        if augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if cutout is not None and cutout < 1:
            raise ValueError(f"cutout must be a patch side >= 1, got {cutout}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
        if train and batch_size % world_size:
            raise ValueError(f"the global batch of {batch_size} does not split over {world_size} processes")
        self.rank, self.world_size, self.min_last = rank, world_size, max(1, min_last)
        self.device = torch.device(device)
        self.x = x_uint8.to(self.device).contiguous()
        self.y = y.to(self.device, torch.int64)
        self.batch_size, self.train, self.seed = batch_size, train, seed
        self.augment, self.drop_last = augment, drop_last
        self.cutout = cutout  # training only: one cutout x cutout square per image, after `augment`
        self.image_size = image_size if image_size is not None else self.x.shape[-1]
        mean_t = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        std_t = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        # (x/255 - mean)/std as one multiply-add on the raw 0..255 values
        self._scale, self._shift = 1 / (255 * std_t), -mean_t / std_t
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch: global steps for training (the same on every rank), this rank's non-empty
        slices for evaluation."""
        return len(self._spans())

    def _global_spans(self) -> list[tuple[int, int]]:
        """[start, end) positions of each global batch (in the epoch's order when training)."""
        n, bs, w = len(self.y), self.batch_size, self.world_size
        spans = [(s, min(s + bs, n)) for s in range(0, n, bs)]
        if self.train and spans and spans[-1][1] - spans[-1][0] < bs:
            lo, hi = spans.pop()
            keep = (hi - lo) - (hi - lo) % w
            if not self.drop_last and keep >= self.min_last * w:
                spans.append((lo, lo + keep))
        return spans

    def _spans(self) -> list[tuple[int, int]]:
        """This rank's [start, end) positions per batch: the rank-th contiguous slice of each global
        batch (empty evaluation slices left out)."""
        out = []
        for lo, hi in self._global_spans():
            base, extra = divmod(hi - lo, self.world_size)
            start = lo + self.rank * base + min(self.rank, extra)
            end = start + base + (self.rank < extra)
            if end > start or self.train:
                out.append((start, end))
        return out

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.y)
        if not self.train:
            for s, e in self._spans():
                yield self._finish(self._eval_view(self.x[s:e].float())), self.y[s:e]
            return
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=g).to(self.device)
        # Indexed by position in `order`, so neither the batch size nor the rank shifts the stream.
        params = [t.to(self.device) for t in self._draw(n, g)]
        for s, e in self._spans():
            idx = order[s:e]
            yield self._train_batch(self.x[idx], [t[s:e] for t in params]), self.y[idx]

    def _draw(self, n: int, g: torch.Generator) -> list[torch.Tensor]:
        _, _, h, w = self.x.shape
        if self.augment == "crop_flip":
            shifts = torch.randint(0, 2 * CROP_PAD + 1, (n, 2), generator=g)
            return [shifts[:, 0], shifts[:, 1], torch.rand(n, generator=g) < 0.5] + self._draw_cutout(n, g)
        if self.augment == "rrc_flip":
            boxes = rrc_params(n, h, w, g)
            return [boxes, torch.rand(n, generator=g) < 0.5] + self._draw_cutout(n, g)
        return self._draw_cutout(n, g)

    def _draw_cutout(self, n: int, g: torch.Generator) -> list[torch.Tensor]:
        """Cutout's square centres, drawn after (so never shifting) the other draws of the epoch."""
        if not self.cutout:
            return []
        return [torch.randint(0, self.image_size, (n,), generator=g),
                torch.randint(0, self.image_size, (n,), generator=g)]

    def _train_batch(self, xb: torch.Tensor, p: list[torch.Tensor]) -> torch.Tensor:
        """Augmented and normalized; Cutout (if on) last, on the normalized batch, as DeVries & Taylor."""
        if not self.cutout:
            return self._finish(self._train_view(xb, *p))
        *p, cy, cx = p
        return cutout(self._finish(self._train_view(xb, *p)), cy, cx, self.cutout)

    def _train_view(self, xb: torch.Tensor, *p: torch.Tensor) -> torch.Tensor:
        if self.augment == "crop_flip":
            return resize(crop_flip(xb, *p, pad=CROP_PAD).float(), self.image_size)
        if self.augment == "rrc_flip":
            return resized_crop_flip(xb.float(), *p, size=self.image_size)
        return resize(xb.float(), self.image_size)

    def _eval_view(self, xb: torch.Tensor) -> torch.Tensor:
        if self.augment == "rrc_flip":
            return resize_center_crop(xb, self.image_size)
        return resize(xb, self.image_size)

    def _finish(self, xb: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self._shift, xb, self._scale)
