"""Where each in-memory ('array') dataset's pixels come from: torchvision files, a lossless archive of the
real pixels, the embedded subset, or a seeded generator. Each source returns numpy splits (and says where
they came from); the registry turns them into tensors.

CIFAR-10/100 can come from two places, torchvision's files or the lossless archives. Both hold the same
pixels, so the place is not part of a run's identity (run_id), only of its records (`Splits.source`). For
that to be true of the numbers and not only of the set, both are put into one canonical order
(`canonical_order`): the same seed then draws the same batches, whichever place the pixels came from.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sebench.data.archive import LOSSLESS_ARCHIVES, cache_lock, cache_root, decode_jpegs, load_archive
from sebench.errors import UserError

EMBEDDED_FILE = Path(__file__).parent / "embedded" / "cifar10_subset.npz"
PATH_FIX = "pass a local path with --data-path or, in a RunConfig, execution.data_path"


@dataclass(frozen=True)
class Splits:
    """uint8 images [N,3,H,W] and int64 labels [N] per split, with the class names labels index."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    source: str = ""  # where the pixels came from (file and checksum, or folder), for the run's records


def canonical_order(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The permutation that sorts a split by (label, sha256 of the image's bytes).

    A pure function of the set of (image, label) pairs: two sources holding the same pixels in different
    file orders yield the same arrays. Pixel-identical images with the same label (CIFAR-100 has a few
    such pairs) are interchangeable, so their relative order does not matter."""
    flat = np.ascontiguousarray(images).reshape(len(images), -1)
    digests = np.array([hashlib.sha256(row.tobytes()).digest() for row in flat], dtype="S32")
    return np.lexsort((digests, labels))


def _canonical(splits: Splits) -> Splits:
    tr = canonical_order(splits.train_x, splits.train_y)
    te = canonical_order(splits.test_x, splits.test_y)
    return Splits(np.ascontiguousarray(splits.train_x[tr]), splits.train_y[tr],
                  np.ascontiguousarray(splits.test_x[te]), splits.test_y[te], splits.classes, splits.source)


def real_splits(name: str, path: str | os.PathLike | None, *, cache_dir: str | os.PathLike | None,
                download: bool) -> Splits:
    """CIFAR-10/100 or SVHN from `path`: a file is read as the data set's lossless archive (CIFAR-10/100
    only), a folder (or no path) as torchvision's files. CIFAR comes back in canonical order."""
    if path is not None and Path(path).expanduser().is_file():
        splits = archive_splits(name, path, cache_dir=cache_dir)
    else:
        splits = torchvision_splits(name, path, cache_dir=cache_dir, download=download)
    return _canonical(splits) if name in LOSSLESS_ARCHIVES else splits


def archive_splits(name: str, path: str | os.PathLike, *, cache_dir: str | os.PathLike | None) -> Splits:
    """The real pixels of `name` from its lossless archive (sha256 checked, decoded once into the cache)."""
    known = LOSSLESS_ARCHIVES.get(name)
    if known is None:
        raise UserError(f"dataset {name!r} has no archive form: {path} is a file", where=str(path),
                        fix=f"{PATH_FIX}: the folder holding its torchvision files")
    a = load_archive(path, cache_dir=cache_dir, expected_sha256=known.sha256, layout=known.layout)
    return Splits(a.train_x, a.train_y, a.test_x, a.test_y, a.classes,
                  source=f"{Path(path).name} (sha256 {a.sha256})")


def torchvision_splits(name: str, path: str | os.PathLike | None, *,
                       cache_dir: str | os.PathLike | None, download: bool) -> Splits:
    """CIFAR-10/100 or SVHN through torchvision; root is `path`, else <cache>/torchvision."""
    from torchvision import datasets  # deferred: importing torchvision costs a second on every CLI call

    root = Path(path).expanduser() if path is not None else cache_root(cache_dir) / "torchvision"
    cls = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100, "svhn": datasets.SVHN}[name]
    try:
        # A download writes and extracts into root: one process at a time (`--jobs N` workers, two sweeps);
        # whoever waited finds the files there, checked, and downloads nothing.
        with cache_lock(root / "sebench-download") if download else nullcontext():
            if name == "svhn":
                train, test = [cls(str(root), split=s, download=download) for s in ("train", "test")]
            else:
                train, test = [cls(str(root), train=t, download=download) for t in (True, False)]
    except ImportError as e:  # torchvision reads SVHN's .mat files with scipy, an optional dependency
        raise UserError(f"reading {name} needs {e.name or 'scipy'}, which is not installed",
                        fix=f"pip install {e.name or 'scipy'}") from e
    except (RuntimeError, OSError) as e:  # files absent or corrupt, or the download failed (offline)
        fix = f"{PATH_FIX}: the folder holding its torchvision files"
        if download:
            raise UserError(f"dataset {name!r}: download failed: {e}", where=str(root), fix=fix) from e
        raise UserError(f"dataset {name!r} not found (or corrupt) and download is off", where=str(root),
                        fix=f"{fix}; or allow the download") from e

    def images(ds) -> np.ndarray:  # CIFAR arrays are NHWC, SVHN's already NCHW
        x = ds.data if name == "svhn" else ds.data.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=np.uint8)

    def labels(ds) -> np.ndarray:
        return np.asarray(ds.labels if name == "svhn" else ds.targets, dtype=np.int64)

    classes = [str(d) for d in range(10)] if name == "svhn" else list(train.classes)
    return Splits(images(train), labels(train), images(test), labels(test), classes,
                  source=f"torchvision files in {root}")


def embedded_splits() -> Splits:
    """The CIFAR-10 JPEG-mirror subset shipped with the package.

    It stores the mirror's original JPEG bytes rather than decoded pixels: decoded JPEG pixels barely
    deflate (6,000 images take 17 MB), so pixels would fit only ~1,000 images in 3 MB, while the JPEG
    bytes of 6,000 take 1.8 MB and decode (with the same Pillow as the archive path, hence to the same
    pixels) in about half a second.
    """
    with np.load(EMBEDDED_FILE, allow_pickle=False) as z:
        split = {}
        for s in ("train", "test"):
            data, ends = z[f"{s}_jpeg"], np.cumsum(z[f"{s}_jpeg_len"])
            starts = ends - z[f"{s}_jpeg_len"]
            split[s] = (decode_jpegs(data[a:b].tobytes() for a, b in zip(starts, ends)), z[f"{s}_y"])
        classes = [str(c) for c in z["classes"]]
    return Splits(*split["train"], *split["test"], classes, source=f"embedded subset {EMBEDDED_FILE.name}")


def synthetic_splits(*, train_per_class: int = 100, test_per_class: int = 20, image_size: int = 32,
                     num_classes: int = 10, seed: int = 0) -> Splits:
    """Learnable random data: each class is a fixed blocky colour pattern, each image that pattern plus
    Gaussian noise. A pure function of the arguments, so tests are deterministic."""
    rng = np.random.default_rng(seed)
    block = -(-image_size // 4)  # ceil: a 4x4 grid of blocks covers the image
    patterns = rng.uniform(64, 192, (num_classes, 3, 4, 4)).repeat(block, 2).repeat(block, 3)
    patterns = patterns[:, :, :image_size, :image_size]

    def make(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
        x = patterns[y] + rng.normal(0, 48, (len(y), 3, image_size, image_size))
        return np.clip(np.rint(x), 0, 255).astype(np.uint8), y

    return Splits(*make(train_per_class), *make(test_per_class), [f"class{c}" for c in range(num_classes)],
                  source=f"generated (seed {seed})")
