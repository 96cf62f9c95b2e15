"""Offline ImageFolder archives (`<top>/{train,test}/<class>/<image>` in a .tar.xz), decoded once and cached.

The archive is verified by sha256, streamed (never extracted to disk), every image (JPEG, or the lossless
WebP of the CIFAR-10/100 pixel archives) is decoded once with Pillow into uint8 arrays, and the result is
cached as one .npz keyed by the archive's checksum, so later runs load the arrays in well under a second
instead of decoding 60,000 images again.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from filelock import FileLock
from PIL import Image

from sebench.errors import UserError

CIFAR10_JPEG_SHA256 = "c6a3459d6a507684c4b097fa19f6367762beeb91d82527ac99ff463bcde30208"
# The real CIFAR pixels as lossless WebP (decode to exactly the original images): the archives that let an
# offline machine train `cifar10` / `cifar100` (data/sources.py: archive_splits).
CIFAR10_LOSSLESS_SHA256 = "f3b181335125a4a9655c315b89a582fccc5766b40e2bbfd1012f1419c73d84cd"
CIFAR100_LOSSLESS_SHA256 = "b3d237c7647e4dea3c338e0d22386ff65eaf6f3b4ff9a766e7db182f429cb8c0"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
# CIFAR-100's fine labels in the order of its meta file (alphabetical), which torchvision's CIFAR100 uses.
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle",
    "mountain", "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear",
    "pickup_truck", "pine_tree", "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon",
    "ray", "road", "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail",
    "snake", "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone",
    "television", "tiger", "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale",
    "willow_tree", "wolf", "woman", "worm")
SPLITS = ("train", "test")
_TREE = "<top>/{train,test}/<class>/<image> (ImageFolder layout)"
_CACHE_VERSION = 1  # bump when the cached arrays' format changes, so stale caches are not read


@dataclass(frozen=True)
class Layout:
    """What a specific archive must contain: class folders in order, images per class in each split."""

    classes: tuple[str, ...]
    train_per_class: int
    test_per_class: int

    def describe(self) -> str:
        n = len(self.classes)
        return (f"{self.train_per_class * n} train / {self.test_per_class * n} test images in {n} class "
                f"folders ({self.train_per_class} / {self.test_per_class} per class)")


CIFAR10_LAYOUT = Layout(CIFAR10_CLASSES, 5000, 1000)  # the JPEG mirror's and the lossless archive's


@dataclass(frozen=True)
class KnownArchive:
    """An archive this suite knows by checksum: the file name it is published under, its sha256 and the
    layout it must decode to."""

    file: str
    sha256: str
    layout: Layout


# dataset name -> the lossless archive that holds its real pixels
LOSSLESS_ARCHIVES = {
    "cifar10": KnownArchive("cifar10-lossless.tar.xz", CIFAR10_LOSSLESS_SHA256, CIFAR10_LAYOUT),
    "cifar100": KnownArchive("cifar100-lossless.tar.xz", CIFAR100_LOSSLESS_SHA256,
                             Layout(CIFAR100_CLASSES, 500, 100)),
}


@dataclass(frozen=True)
class DecodedArchive:
    """Decoded splits: uint8 images [N,3,H,W], int64 labels [N] indexing `classes` (sorted names)."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    sha256: str


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: `cache_dir` when given, else $SEBENCH_CACHE, else ~/.cache/sebench."""
    chosen = cache_dir if cache_dir is not None else os.environ.get("SEBENCH_CACHE")
    return Path(chosen).expanduser() if chosen else Path.home() / ".cache" / "sebench"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def decode_jpegs(blobs: Iterable[bytes]) -> np.ndarray:
    """Decode encoded images (all the same size; JPEG, WebP or any format Pillow reads) into one uint8
    array [N,3,H,W]."""
    arrays = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs]
    return np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))


def load_archive(path: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                 expected_sha256: str | None = CIFAR10_JPEG_SHA256,
                 layout: Layout | None = CIFAR10_LAYOUT) -> DecodedArchive:
    """Arrays of an ImageFolder .tar.xz archive, from the cache when it holds them.

    `expected_sha256=None` skips the checksum check and `layout=None` accepts any consistent class layout
    (for archives other than the CIFAR-10 JPEG mirror, e.g. in tests). Every problem with the file raises
    UserError naming it; nothing is written to the cache unless the whole archive decoded and checked out.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "a directory" if path.is_dir() else "no such file"
        raise UserError(f"{what}; expected the ImageFolder archive (.tar.xz)", where=str(path))
    digest = sha256_file(path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise UserError(f"sha256 mismatch: got {digest}, expected {expected_sha256}", where=str(path),
                        fix="the file is corrupt or a different archive; fetch it again")

    cache_file = cache_root(cache_dir) / f"archive-{digest[:16]}-v{_CACHE_VERSION}.npz"
    cached = _read_cache(cache_file, digest)  # no lock needed: the file only ever appears whole (os.replace)
    if cached is None:
        # Cold cache: one process decodes, the others (`--jobs N` workers, another sweep) wait and read it.
        with cache_lock(cache_file):
            cached = _read_cache(cache_file, digest)
            if cached is None:
                cached = _decode_archive(path, digest)
                _check_layout(cached, layout, path)
                try:
                    _write_cache(cache_file, cached)
                except OSError as e:
                    raise _unwritable_cache(cache_file, e) from e
                return cached
    _check_layout(cached, layout, path)
    return cached


@contextmanager
def cache_lock(file: Path) -> Iterator[None]:
    """Hold `<file>.lock` (an OS file lock, released if the holder dies) while filling `file`: whoever
    waits for it finds the file written when it gets the lock."""
    lock = FileLock(f"{file}.lock")
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except OSError as e:
        raise _unwritable_cache(file, e) from e
    try:
        yield
    finally:
        lock.release()


def _unwritable_cache(file: Path, e: OSError) -> UserError:
    return UserError(f"cannot write the dataset cache ({e.strerror or e})", where=str(file),
                     fix="pass a writable cache directory: --cache-dir, execution.cache_dir or $SEBENCH_CACHE")


def read_members(path: Path) -> dict[str, list[tuple[str, str, bytes]]]:
    """split -> [(class, file name, encoded image)] sorted by (class, file name), streamed from the tar.

    Tar order is arbitrary; the sorted order makes the decoded arrays reproducible.
    """
    members: dict[str, list[tuple[str, str, bytes]]] = {s: [] for s in SPLITS}
    try:
        with tarfile.open(path, mode="r:xz") as tar:
            for member in tar:
                if not member.isfile() or Path(member.name).name.startswith("."):
                    continue
                parts = Path(member.name).parts
                if len(parts) != 4 or parts[1] not in SPLITS:
                    raise UserError(f"unexpected member {member.name!r}", where=str(path),
                                    fix=f"expected {_TREE}")
                members[parts[1]].append((parts[2], parts[3], tar.extractfile(member).read()))
    except (tarfile.TarError, lzma.LZMAError, EOFError, OSError) as e:
        raise UserError(f"not a readable .tar.xz archive ({type(e).__name__}: {e})", where=str(path),
                        fix="the file is truncated or corrupt; fetch it again") from e
    classes = sorted({c for c, _, _ in members["train"]})
    if not classes or sorted({c for c, _, _ in members["test"]}) != classes:
        raise UserError("train/ and test/ must hold the same, non-empty set of class folders",
                        where=str(path), fix=f"expected {_TREE}")
    return {s: sorted(items) for s, items in members.items()}


def _decode_archive(path: Path, digest: str) -> DecodedArchive:
    members = read_members(path)
    classes = sorted({c for c, _, _ in members["train"]})
    index = {c: i for i, c in enumerate(classes)}
    arrays: dict[str, np.ndarray] = {}
    for split, items in members.items():
        try:
            arrays[f"{split}_x"] = decode_jpegs(b for _, _, b in items)
        except (OSError, ValueError) as e:  # undecodable image, or images of different sizes
            raise UserError(f"cannot decode the {split} images ({e})", where=str(path),
                            fix="expected RGB images of one size") from e
        arrays[f"{split}_y"] = np.array([index[c] for c, _, _ in items], dtype=np.int64)
    return DecodedArchive(classes=classes, sha256=digest, **arrays)


def _check_layout(data: DecodedArchive, layout: Layout | None, path: Path) -> None:
    if layout is None:
        return
    ok = tuple(data.classes) == layout.classes and all(
        (np.bincount(y, minlength=len(layout.classes)) == per_class).all()
        for y, per_class in ((data.train_y, layout.train_per_class), (data.test_y, layout.test_per_class)))
    if not ok:
        found = (f"{len(data.train_y)} train / {len(data.test_y)} test images in {len(data.classes)} "
                 f"class folders")
        raise UserError(f"wrong layout: found {found}", where=str(path), fix=f"expected {layout.describe()}")


def _read_cache(file: Path, digest: str) -> DecodedArchive | None:
    """The cached arrays of the archive with this digest, or None when absent or unreadable (then they are
    decoded again)."""
    if not file.is_file():
        return None
    try:
        with np.load(file, allow_pickle=False) as z:
            if str(z["sha256"]) != digest:
                return None
            return DecodedArchive(train_x=z["train_x"], train_y=z["train_y"], test_x=z["test_x"],
                                  test_y=z["test_y"], classes=[str(c) for c in z["classes"]],
                                  sha256=str(z["sha256"]))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None


def _write_cache(file: Path, data: DecodedArchive) -> None:
    """Write atomically: a temp file in the same directory, then os.replace, so no reader sees a partial
    file. Uncompressed, because loading must be fast and the JPEG pixels barely compress."""
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{file.name}.", suffix=".tmp", dir=file.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, train_x=data.train_x, train_y=data.train_y, test_x=data.test_x, test_y=data.test_y,
                     classes=np.array(data.classes), sha256=np.array(data.sha256))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache and package data are shareable
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
