"""CIFAR-10/100 from the lossless archives of the real pixels (SEBENCH_CIFAR10 / SEBENCH_CIFAR100, which
.ci/run sets when the files are there): counts, class order, the canonical statistics, the run records.
Without the variables the real-data tests skip and say why; the order and path logic is tested always."""

import os

import numpy as np
import pytest

from sebench.data import load_arrays
from sebench.data.archive import CIFAR10_CLASSES, CIFAR100_CLASSES
from sebench.data.registry import data_path_variable, default_data_path
from sebench.data.sources import canonical_order, real_splits
from sebench.errors import UserError
from sebench.runner import with_execution
from sebench.spec import ModelCfg, RunConfig

# data/README.md of the project's shared data: the training split's per-channel mean and std (population)
CANONICAL = {
    "cifar10": ((0.49139968, 0.48215841, 0.44653091), (0.24703223, 0.24348513, 0.26158784)),
    "cifar100": ((0.50707516, 0.48654887, 0.44091784), (0.26733429, 0.25643846, 0.27615047)),
}
TORCHVISION_CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def archive(name: str) -> str:
    path = os.environ.get(data_path_variable(name))
    if not path:
        pytest.skip(f"{data_path_variable(name)} not set: point it at {name}-lossless.tar.xz to test the real pixels")
    return path


@pytest.fixture(scope="module", params=["cifar10", "cifar100"])
def real(request, real_cache):
    name = request.param
    return name, load_arrays(name, path=archive(name), cache_dir=real_cache)


def test_counts_per_split_and_class(real):
    name, d = real
    per_class = {"cifar10": (5000, 1000), "cifar100": (500, 100)}[name]
    for y, n in ((d.train_y, per_class[0]), (d.test_y, per_class[1])):
        assert np.bincount(y.numpy()).tolist() == [n] * len(d.classes)
    assert tuple(d.train_x.shape[1:]) == (3, 32, 32) and d.info.label == {"cifar10": "CIFAR-10",
                                                                           "cifar100": "CIFAR-100"}[name]


def test_class_order_is_torchvisions(real):
    """torchvision takes the classes from the data set's meta file: alphabetical for both sets."""
    name, d = real
    if name == "cifar10":
        assert d.classes == TORCHVISION_CIFAR10 == list(CIFAR10_CLASSES)
    else:
        assert d.classes == sorted(d.classes) == list(CIFAR100_CLASSES) and len(d.classes) == 100
        assert d.classes[:3] == ["apple", "aquarium_fish", "baby"] and d.classes[-1] == "worm"


def test_training_statistics_are_the_canonical_ones(real):
    name, d = real
    x = d.train_x.numpy().astype(np.float64) / 255
    mean, std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
    np.testing.assert_allclose(mean, CANONICAL[name][0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(std, CANONICAL[name][1], atol=1e-6, rtol=0)


def test_the_records_name_the_archive(real):
    name, d = real
    assert d.source.startswith(f"{name}-lossless.tar.xz (sha256 ") and len(d.source.split()[-1]) == 65


def test_another_archive_under_the_name_is_refused(tmp_path):
    bogus = tmp_path / "cifar10-lossless.tar.xz"
    bogus.write_bytes(b"not an archive")
    with pytest.raises(UserError, match="sha256 mismatch"):
        load_arrays("cifar10", path=bogus, cache_dir=tmp_path)
    with pytest.raises(UserError, match="no archive form"):
        load_arrays("svhn", path=bogus, cache_dir=tmp_path)


def test_canonical_order_depends_on_the_set_not_the_file_order():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 3, 4, 4), dtype=np.uint8)
    y = rng.integers(0, 5, 50)
    x[7], y[7] = x[3], y[3]  # a pixel-identical pair with one label, as CIFAR-100 has
    a = canonical_order(x, y)
    perm = rng.permutation(50)
    b = canonical_order(x[perm], y[perm])
    assert np.array_equal(x[a], x[perm][b]) and np.array_equal(y[a], y[perm][b])
    assert np.all(np.diff(y[a]) >= 0)  # grouped by label


def test_a_folder_path_means_torchvisions_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        real_splits("cifar10", tmp_path, cache_dir=tmp_path, download=False)


def test_the_data_path_comes_from_the_environment_at_planning_time(monkeypatch, tmp_path):
    rc = RunConfig(model=ModelCfg(name="cnn3"), data={"name": "cifar10"}, epochs=1)
    monkeypatch.delenv("SEBENCH_CIFAR10", raising=False)
    assert default_data_path("cifar10") is None and with_execution(rc).execution.data_path is None
    monkeypatch.setenv("SEBENCH_CIFAR10", str(tmp_path / "c.tar.xz"))
    planned = with_execution(rc)
    assert planned.execution.data_path == str(tmp_path / "c.tar.xz")
    assert planned.run_id == rc.run_id  # where the pixels come from is not part of the run's identity
    assert with_execution(rc, data_path="/elsewhere").execution.data_path == "/elsewhere"  # a flag wins
    assert data_path_variable("cifar10-jpeg") == "SEBENCH_CIFAR10_JPEG"
