"""ImageFolder loaders on a tiny tree of PNGs."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from sebench.data import build_loaders, folder_loaders
from sebench.errors import UserError
from sebench.spec import DataCfg


def make_tree(root: Path, classes=("ant", "bee"), per_class=(("train", 6), ("val", 2))) -> Path:
    g = torch.Generator().manual_seed(0)
    for split, n in per_class:
        for cls in classes:
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                px = torch.randint(0, 256, (20, 24, 3), dtype=torch.uint8, generator=g).numpy()
                Image.fromarray(px).save(root / split / cls / f"{i}.png")
    return root


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "tiny")


def epoch(loader, e):
    loader.set_epoch(e)
    xs, ys = zip(*loader)
    return torch.cat(xs), torch.cat(ys)


def test_shapes_classes_and_eval_order(tree):
    train, val, classes = folder_loaders(tree, batch_size=4, eval_batch_size=3, workers=0, image_size=16,
                                         seed=0)
    assert classes == ["ant", "bee"] and (len(train), len(val)) == (3, 2)
    x, y = epoch(train, 0)
    assert x.shape == (12, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert epoch(val, 0)[1].tolist() == [0, 0, 1, 1]


def test_epochs_are_reproducible_whatever_the_worker_count(tree):
    kw = dict(batch_size=4, eval_batch_size=4, image_size=16, seed=1)
    single, _, _ = folder_loaders(tree, workers=0, **kw)
    state = torch.get_rng_state()
    e0, e1 = epoch(single, 0), epoch(single, 1)
    assert torch.equal(torch.get_rng_state(), state)
    assert not torch.equal(e0[0], e1[0])
    pooled, _, _ = folder_loaders(tree, workers=2, **kw)  # persistent workers, entered at epoch 1 directly
    resumed = epoch(pooled, 1)
    assert torch.equal(resumed[0], e1[0]) and torch.equal(resumed[1], e1[1])


def test_bad_trees(tmp_path, tree):
    kw = dict(batch_size=2, eval_batch_size=2, workers=0, seed=0)
    (tmp_path / "no_val" / "train" / "a").mkdir(parents=True)
    with pytest.raises(UserError, match="val/"):
        folder_loaders(tmp_path / "no_val", **kw)
    with pytest.raises(UserError, match="not a directory"):
        folder_loaders(tmp_path / "absent", **kw)
    other = make_tree(tmp_path / "other", per_class=(("train", 1),))
    make_tree(tmp_path / "other_val", classes=("ant", "wasp"), per_class=(("val", 1),))
    (tmp_path / "other_val" / "val").rename(other / "val")
    with pytest.raises(UserError, match="different class folders"):
        folder_loaders(other, **kw)


def test_build_loaders_for_a_folder_tree(tree):
    cfg = DataCfg(name="imagefolder", augment="rrc_flip", image_size=16, train_subset=4)
    ld = build_loaders(cfg, batch_size=2, eval_batch_size=2, device="cpu", seed=0, path=tree, num_workers=0)
    assert ld.label == "ImageFolder(tiny) [train 4, test 4]" and ld.info.label == "ImageFolder(tiny)"
    assert (ld.num_classes, ld.num_train, ld.num_test, len(ld.train)) == (2, 4, 4, 2)
    assert sorted(epoch(ld.train, 3)[1].tolist()) == [0, 0, 1, 1]  # the subset is class-balanced


def test_a_last_training_batch_of_one_is_dropped_and_only_then(tmp_path):
    odd = make_tree(tmp_path / "odd", per_class=(("train", 5), ("val", 2)))  # 10 images: batches 3, 3, 3, 1
    train, _, _ = folder_loaders(odd, batch_size=3, eval_batch_size=4, workers=0, image_size=16, seed=0)
    assert len(train) == 3 and [len(y) for _, y in train] == [3, 3, 3]
    train, _, _ = folder_loaders(odd, batch_size=4, eval_batch_size=4, workers=0, image_size=16, seed=0)
    assert [len(y) for _, y in train] == [4, 4, 2]  # a last batch of 2 is kept
