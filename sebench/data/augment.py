"""Batched augmentation on the device: every op takes a whole batch plus per-sample parameters drawn
beforehand, so the randomness lives in one seeded generator and the ops themselves are deterministic."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)
_CHUNK_PIXELS = 1 << 24  # output pixels per grid_sample/interpolate call: bounds the temporaries (~200 MB)


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor,
              pad: int) -> torch.Tensor:
    """Random-crop-with-padding plus horizontal flip, as one pair of gathers (no per-sample loop).

    x: [B,C,H,W] (any dtype); dy, dx in [0, 2*pad]: window offsets into the zero-padded image; flip: bool.
    Padding is zero *before* normalization, i.e. black pixels, as torchvision's RandomCrop(32, padding=4)
    does on PIL images. A flipped sample reads its window's columns right to left, so crop and flip are
    one gather: out[..., j] = padded[..., dx + W-1-j].
    """
    b, c, h, w = x.shape
    xp = F.pad(x, (pad, pad, pad, pad))
    ar_h = torch.arange(h, device=x.device)
    ar_w = torch.arange(w, device=x.device)
    rows = (dy[:, None] + ar_h)[:, None, :, None].expand(b, c, h, w + 2 * pad)
    cols = torch.where(flip[:, None], dx[:, None] + (w - 1 - ar_w), dx[:, None] + ar_w)
    return torch.gather(torch.gather(xp, 2, rows), 3, cols[:, None, None, :].expand(b, c, h, w))


def rrc_params(n: int, height: int, width: int, generator: torch.Generator,
               scale: tuple[float, float] = RRC_SCALE, ratio: tuple[float, float] = RRC_RATIO
               ) -> torch.Tensor:
    """Boxes [n,4] = (top, left, h, w) drawn as torchvision's RandomResizedCrop.get_params does, vectorized:
    up to 10 tries of (area fraction, log-uniform aspect ratio) per sample, the first box that fits wins;
    samples with no fitting try fall back to the largest centred box with the ratio clamped into range."""
    tries = 10
    area = height * width * torch.empty(n, tries).uniform_(*scale, generator=generator)
    aspect = torch.exp(torch.empty(n, tries).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                        generator=generator))
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.int().argmax(1, keepdim=True)  # index of the first fitting try (0 if none fits)
    w, h, found = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0], fits.any(1)

    clamped = min(max(width / height, ratio[0]), ratio[1])
    wide = width / height > clamped
    fb_w, fb_h = (round(height * clamped), height) if wide else (width, round(width / clamped))
    h = torch.where(found, h, float(fb_h))
    w = torch.where(found, w, float(fb_w))
    pos = torch.rand(n, 2, generator=generator)  # uniform integer offsets in [0, H-h] and [0, W-w]
    top = torch.where(found, torch.floor(pos[:, 0] * (height - h + 1)), torch.floor((height - h) / 2))
    left = torch.where(found, torch.floor(pos[:, 1] * (width - w + 1)), torch.floor((width - w) / 2))
    return torch.stack([top, left, h, w], 1)


def resized_crop_flip(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each sample's box and resize it bilinearly to size x size (flipped where `flip`), through
    per-sample affine grids. x: float [B,C,H,W]; boxes: [B,4] (top, left, h, w) in pixels."""
    b, c, height, width = x.shape
    boxes = boxes.to(device=x.device, dtype=torch.float32)
    top, left, h, w = boxes.unbind(1)
    sign = 1 - 2 * flip.to(device=x.device, dtype=torch.float32)
    theta = torch.zeros(b, 2, 3, device=x.device)
    # Normalized coordinates (align_corners=False): the box spans [2*left/W - 1, 2*(left+w)/W - 1].
    theta[:, 0, 0] = w / width * sign
    theta[:, 0, 2] = (2 * left + w) / width - 1
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    out = x.new_empty(b, c, size, size)
    step = max(1, _CHUNK_PIXELS // (size * size))
    for s in range(0, b, step):
        grid = F.affine_grid(theta[s:s + step], [min(step, b - s), c, size, size], align_corners=False)
        out[s:s + step] = F.grid_sample(x[s:s + step], grid, mode="bilinear", padding_mode="border",
                                        align_corners=False)
    return out


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a float batch to size x size, antialiased as torchvision's Resize."""
    if x.shape[-2:] == (size, size):
        return x
    out = x.new_empty(x.shape[0], x.shape[1], size, size)
    step = max(1, _CHUNK_PIXELS // (size * size))
    for s in range(0, x.shape[0], step):
        out[s:s + step] = F.interpolate(x[s:s + step], size=(size, size), mode="bilinear",
                                        align_corners=False, antialias=True)
    return out


def resize_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The evaluation side of RandomResizedCrop: resize to round(size*256/224), centre crop size."""
    big = round(size * 256 / 224)
    y = resize(x, big)
    top = int(round((big - size) / 2.0))  # torchvision's CenterCrop offset
    return y[:, :, top:top + size, top:top + size]


def cutout(x: torch.Tensor, cy: torch.Tensor, cx: torch.Tensor, length: int) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): zero one length x length square per sample, as their code does.

    x: [B,C,H,W], normalized (their Cutout runs after normalization, so a zero is the data set's mean
    pixel); cy, cx: the square's centres, drawn uniformly over the image's pixels. The square spans rows
    [cy - length//2, cy + length//2) (columns likewise), clipped to the image: near a border only part of
    it lands on the image, as in their code (np.clip of the corners).
    """
    h, w = x.shape[-2:]
    half = length // 2
    cy, cx = cy.to(x.device)[:, None], cx.to(x.device)[:, None]
    ar_h = torch.arange(h, device=x.device)[None]
    ar_w = torch.arange(w, device=x.device)[None]
    rows = (ar_h >= cy - half) & (ar_h < cy + half)  # [B,H]
    cols = (ar_w >= cx - half) & (ar_w < cx + half)  # [B,W]
    return x.masked_fill((rows[:, :, None] & cols[:, None, :])[:, None], 0)
