"""Dataset registry, subsets, synthetic and embedded data, and build_loaders."""

import numpy as np
import pytest
import torch

from sebench.data import DATASETS, build_loaders, get_info, load_arrays, subset
from sebench.data.registry import stratified_indices
from sebench.data.sources import EMBEDDED_FILE
from sebench.errors import UserError
from sebench.spec import DataCfg


def test_registry_entries():
    assert set(DATASETS) == {"cifar10", "cifar100", "svhn", "cifar10-jpeg", "cifar10-embedded", "synthetic",
                             "imagefolder"}
    for name, info in DATASETS.items():
        assert info.name == name and info.kind in ("array", "folder") and len(info.mean) == len(info.std) == 3
    assert get_info("cifar10-jpeg").label == "CIFAR-10 (JPEG q75 mirror)"
    assert get_info("cifar10-jpeg").needs_path and not get_info("cifar10-embedded").needs_path


def test_unknown_name_lists_the_allowed_names():
    with pytest.raises(UserError) as e:
        get_info("cifar11")
    assert "cifar11" in str(e.value) and "'cifar10-jpeg'" in str(e.value) and "'synthetic'" in str(e.value)


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn"])
def test_torchvision_set_absent_offline_names_the_path_option(name, tmp_path):
    with pytest.raises(UserError) as e:
        load_arrays(name, path=tmp_path, download=False)
    msg = str(e.value)
    assert name in msg and str(tmp_path) in msg and "--data-path" in msg and "download" in msg


def test_path_is_required_where_needed():
    with pytest.raises(UserError, match="--data-path"):
        load_arrays("cifar10-jpeg")
    with pytest.raises(UserError, match="build_loaders"):
        load_arrays("imagefolder", path=".")


def test_synthetic_is_deterministic_sized_and_learnable():
    a, b = load_arrays("synthetic"), load_arrays("synthetic")
    assert torch.equal(a.train_x, b.train_x) and a.train_x.shape == (1000, 3, 32, 32)
    small = load_arrays("synthetic", train_per_class=3, test_per_class=2, image_size=8, seed=1)
    assert small.train_x.shape == (30, 3, 8, 8) and small.test_x.shape == (20, 3, 8, 8)
    assert small.info.image_size == 8 and small.train_x.dtype == torch.uint8
    # nearest class mean on the training set classifies the test set almost perfectly
    means = torch.stack([a.train_x[a.train_y == k].float().mean(0) for k in range(10)])
    pred = torch.cdist(a.test_x.float().flatten(1), means.flatten(1)).argmin(1)
    assert (pred == a.test_y).float().mean() > 0.9


def test_stratified_subset_is_balanced_seeded_and_handles_imbalance():
    data = load_arrays("synthetic")
    s = subset(data, train=205, test=30, seed=0)
    counts = torch.bincount(s.train_y, minlength=10)
    assert len(s.train_y) == 205 and counts.max() - counts.min() <= 1
    assert torch.equal(torch.bincount(s.test_y), torch.full((10,), 3))
    assert torch.equal(subset(data, train=205, seed=0).train_x, s.train_x)
    assert not torch.equal(subset(data, train=205, seed=1).train_y, s.train_y) or \
        not torch.equal(subset(data, train=205, seed=1).train_x, s.train_x)
    assert len(s.test_y) == 30 and len(subset(data, train=10).test_y) == 200  # None keeps the split
    labels = torch.tensor([0] * 90 + [1] * 5 + [2] * 5)  # a rare class runs out; the rest fill in
    idx = stratified_indices(labels, 40, seed=0)
    assert torch.equal(torch.bincount(labels[idx]), torch.tensor([30, 5, 5]))
    assert torch.equal(idx, idx.sort().values) and len(idx.unique()) == 40
    with pytest.raises(UserError, match="train_subset"):
        subset(data, train=1001)


def test_embedded_subset():
    assert EMBEDDED_FILE.stat().st_size <= 3 * 1024 * 1024
    d = load_arrays("cifar10-embedded")
    assert d.train_x.shape == (5000, 3, 32, 32) and d.test_x.shape == (1000, 3, 32, 32)
    assert d.train_x.dtype == torch.uint8 and d.train_x.is_contiguous()
    assert torch.equal(torch.bincount(d.train_y), torch.full((10,), 500))
    assert torch.equal(torch.bincount(d.test_y), torch.full((10,), 100))
    assert d.classes[0] == "airplane" and d.classes[-1] == "truck"
    assert d.info.label == "CIFAR-10 (JPEG q75 mirror, embedded subset)"
    with np.load(EMBEDDED_FILE) as z:
        assert int(z["seed"]) == 0 and str(z["source_sha256"]).startswith("c6a3459d")
        assert z["train_per_class"].tolist() == [500] * 10


def test_build_loaders_array_data_with_subsets():
    cfg = DataCfg(name="synthetic", train_subset=200, test_subset=50)
    ld = build_loaders(cfg, batch_size=64, eval_batch_size=32, device="cpu", seed=0)
    assert ld.label == "synthetic [train 200, test 50]" and ld.num_classes == 10
    assert (ld.num_train, ld.num_test, len(ld.train), len(ld.test)) == (200, 50, 4, 2)
    ld.train.set_epoch(1)
    xb, yb = next(iter(ld.train))
    assert xb.shape == (64, 3, 32, 32) and yb.dtype == torch.int64


def test_build_loaders_defaults_to_the_embedded_subset():
    ld = build_loaders(DataCfg(), batch_size=128, eval_batch_size=500, device="cpu", seed=0)
    assert ld.label == "CIFAR-10 (JPEG q75 mirror, embedded subset)" and ld.info.name == "cifar10-embedded"
    assert (ld.num_train, ld.num_test, len(ld.test)) == (5000, 1000, 2)


def test_build_loaders_folder_data_needs_a_path_and_rrc():
    with pytest.raises(UserError, match="--data-path"):
        build_loaders(DataCfg(name="imagefolder", augment="rrc_flip"), batch_size=2, eval_batch_size=2,
                      device="cpu", seed=0)
    with pytest.raises(UserError, match="rrc_flip"):
        build_loaders(DataCfg(name="imagefolder"), batch_size=2, eval_batch_size=2, device="cpu", seed=0,
                      path=".")
