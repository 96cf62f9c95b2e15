"""Build sebench/data/embedded/cifar10_subset.npz: a class-balanced, seeded subset of the CIFAR-10 JPEG
mirror, stored as the archive's original JPEG bytes (why: see sebench.data.sources.embedded_splits).

    python scripts/make_embedded_subset.py --archive ../shared/data/cifar10-jpeg.tar.xz \\
        --out sebench/data/embedded/cifar10_subset.npz --train-per-class 500 --test-per-class 100 --seed 0

The choice is deterministic: per split, sebench's stratified subset (seeded by --seed) of the archive's
images in the order the archive reader decodes them, whose positions the file records as *_source_index.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from sebench.data.archive import CIFAR10_JPEG_SHA256, read_members, sha256_file
from sebench.data.registry import stratified_indices
from sebench.errors import UserError

MAX_BYTES = 3 * 1024 * 1024


def build(archive: Path, train_per_class: int, test_per_class: int, seed: int) -> dict[str, np.ndarray]:
    """The arrays of the subset file."""
    if not archive.is_file():
        raise UserError("no such file; expected cifar10-jpeg.tar.xz", where=str(archive))
    digest = sha256_file(archive)
    if digest != CIFAR10_JPEG_SHA256:
        raise UserError(f"sha256 mismatch: got {digest}, expected {CIFAR10_JPEG_SHA256}", where=str(archive))
    members = read_members(archive)
    classes = sorted({c for c, _, _ in members["train"]})
    out = {"classes": np.array(classes), "source_sha256": np.array(digest), "seed": np.array(seed)}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        items = members[split]
        labels = torch.tensor([classes.index(c) for c, _, _ in items])
        idx = stratified_indices(labels, per_class * len(classes), seed).numpy()
        blobs = [items[i][2] for i in idx]
        out[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        out[f"{split}_jpeg_len"] = np.array([len(b) for b in blobs], dtype=np.int64)
        out[f"{split}_y"] = labels[idx].numpy()
        out[f"{split}_source_index"] = idx
        out[f"{split}_per_class"] = np.bincount(out[f"{split}_y"], minlength=len(classes))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--archive", type=Path, required=True, help="cifar10-jpeg.tar.xz")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    arrays = build(args.archive, args.train_per_class, args.test_per_class, args.seed)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{args.out.name}.", suffix=".tmp", dir=args.out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache and package data are shareable
        os.replace(tmp, args.out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    size = args.out.stat().st_size
    print(f"wrote {args.out}: {size / 2**20:.2f} MiB, {args.train_per_class} train + {args.test_per_class} "
          f"test images per class, seed {args.seed}")
    if size > MAX_BYTES:
        print(f"error: over the {MAX_BYTES // 2**20} MiB limit; use fewer images per class", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
