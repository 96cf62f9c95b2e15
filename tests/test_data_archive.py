"""The ImageFolder archive reader and its cache: a tiny fake archive, its failure modes, and the real one."""

import hashlib
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sebench.data.archive as archive
from sebench.data import CIFAR10_JPEG_SHA256, Layout, load_archive, load_arrays
from sebench.data.sources import EMBEDDED_FILE
from sebench.errors import UserError

COLOURS = {"cat": (200, 30, 30), "dog": (30, 30, 200)}  # flat colours survive JPEG nearly unchanged
PER_SPLIT = {"train": 3, "test": 2}


def jpeg(colour) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_archive(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    files = {f"fake/{split}/{cls}/{i:04d}.jpg": jpeg(colour)
             for split, n in PER_SPLIT.items() for cls, colour in COLOURS.items() for i in range(n)}
    files.update(extra or {})
    with tarfile.open(path, "w:xz") as tar:
        for name, data in sorted(files.items(), reverse=True):  # reader must not rely on tar order
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fake(tmp_path) -> Path:
    return write_archive(tmp_path / "fake.tar.xz")


def read(path, cache, **kw):
    return load_archive(path, cache_dir=cache, **{"expected_sha256": None, "layout": None, **kw})


def test_reads_a_fake_archive_and_caches_it(fake, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    a = read(fake, cache)
    assert a.classes == ["cat", "dog"]
    assert a.train_x.shape == (6, 3, 8, 8) and a.train_x.dtype == np.uint8 and a.test_x.shape == (4, 3, 8, 8)
    assert a.train_y.tolist() == [0, 0, 0, 1, 1, 1] and a.test_y.dtype == np.int64
    assert np.abs(a.train_x[0, :, 0, 0].astype(int) - COLOURS["cat"]).max() < 8
    assert [p.suffix for p in cache.iterdir() if p.suffix != ".lock"] == [".npz"]

    def no_decode(*args):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(archive, "_decode_archive", no_decode)
    b = read(fake, cache)
    assert np.array_equal(a.train_x, b.train_x) and b.classes == a.classes


def test_explicit_checksum_and_layout(fake, tmp_path):
    digest = hashlib.sha256(fake.read_bytes()).hexdigest()
    a = read(fake, tmp_path / "c", expected_sha256=digest, layout=Layout(("cat", "dog"), 3, 2))
    assert a.sha256 == digest
    with pytest.raises(UserError) as e:
        read(fake, tmp_path / "c", layout=Layout(("cat", "dog"), 5, 2))
    assert str(fake) in str(e.value) and "10 train / 4 test images in 2 class folders" in str(e.value)


def test_load_arrays_passes_archive_options(fake, tmp_path):
    d = load_arrays("cifar10-jpeg", path=fake, cache_dir=tmp_path, expected_sha256=None, layout=None)
    assert d.train_x.dtype == torch.uint8 and d.train_y.dtype == torch.int64 and d.classes == ["cat", "dog"]
    assert d.info.label == "CIFAR-10 (JPEG q75 mirror)"


def assert_fails_cleanly(path: Path, cache: Path, match: str, **kw):
    with pytest.raises(UserError, match=match) as e:
        read(path, cache, **kw)
    assert str(path) in str(e.value)
    assert not cache.exists() or all(p.suffix == ".lock" for p in cache.iterdir())  # no cache or temp file


def test_checksum_mismatch_names_file_and_expected_sha(fake, tmp_path):
    assert_fails_cleanly(fake, tmp_path / "c", CIFAR10_JPEG_SHA256, expected_sha256=CIFAR10_JPEG_SHA256)
    with pytest.raises(UserError, match="sha256 mismatch"):
        load_archive(fake, cache_dir=tmp_path / "c")  # the real checksum is the default


def test_truncated_archive(fake, tmp_path):
    cut = tmp_path / "cut.tar.xz"
    cut.write_bytes(fake.read_bytes()[: fake.stat().st_size // 2])
    assert_fails_cleanly(cut, tmp_path / "c", "truncated or corrupt")


def test_not_an_archive(tmp_path):
    text = tmp_path / "notes.tar.xz"
    text.write_text("not an archive\n")
    assert_fails_cleanly(text, tmp_path / "c", "not a readable")


def test_missing_file_directory_and_bad_layout(tmp_path):
    assert_fails_cleanly(tmp_path / "absent.tar.xz", tmp_path / "c", "no such file")
    assert_fails_cleanly(tmp_path, tmp_path / "c", "directory")
    stray = write_archive(tmp_path / "stray.tar.xz", {"fake/train/cat/deeper/0.jpg": jpeg((0, 0, 0))})
    assert_fails_cleanly(stray, tmp_path / "c", "unexpected member")
    broken = write_archive(tmp_path / "broken.tar.xz", {"fake/test/dog/9999.jpg": b"not a jpeg"})
    assert_fails_cleanly(broken, tmp_path / "c", "cannot decode")


def test_failed_cache_write_leaves_nothing(fake, tmp_path, monkeypatch):
    def interrupted(*args, **kw):
        raise KeyboardInterrupt  # as if the run were killed mid-write

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        read(fake, tmp_path / "c")
    assert [p.suffix for p in (tmp_path / "c").iterdir()] in ([], [".lock"])  # no cache, whole or partial


@pytest.mark.integration
def test_real_cifar10_jpeg_archive(real_archive, real_cache):
    d = load_arrays("cifar10-jpeg", path=real_archive, cache_dir=real_cache)
    assert d.train_x.shape == (50000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert d.classes == list(archive.CIFAR10_CLASSES)
    assert torch.equal(torch.bincount(d.train_y), torch.full((10,), 5000))
    assert torch.equal(torch.bincount(d.test_y), torch.full((10,), 1000))
    assert d.info.label == "CIFAR-10 (JPEG q75 mirror)"
    mean = d.train_x.float().mean((0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor(d.info.mean), atol=2e-4)  # the registry's constants fit the data
    with np.load(EMBEDDED_FILE) as z:  # the embedded subset decodes to exactly the archive's pixels
        idx = torch.from_numpy(z["test_source_index"])
    emb = load_arrays("cifar10-embedded")
    assert torch.equal(d.test_x[idx], emb.test_x) and torch.equal(d.test_y[idx], emb.test_y)
