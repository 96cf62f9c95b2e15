"""Cutout (DeVries & Taylor 2017) in the on-device batched augmentation: one square per training image, zeroed
after normalization; off by default, and switching it on leaves every other draw of the epoch unchanged."""

from pathlib import Path

import pytest
import torch

from sebench.data.augment import cutout
from sebench.data.loader import ArrayLoader
from sebench.spec import DataCfg, RunConfig, expand, load_spec

ROOT = Path(__file__).resolve().parents[1]


def test_cutout_zeroes_one_clipped_square_per_image():
    x = torch.ones(3, 2, 32, 32)
    out = cutout(x, torch.tensor([16, 0, 31]), torch.tensor([16, 0, 5]), 16)
    zeros = (out == 0).all(1)  # [B,H,W], every channel zeroed together
    assert zeros.sum((1, 2)).tolist() == [256, 64, 9 * 13]  # full square; corner 8x8; clipped at two edges
    assert zeros[0, 8:24, 8:24].all() and not zeros[0, 7].any() and not zeros[0, 24].any()
    assert zeros[2, 23:, 0:13].all()
    assert torch.equal(x, torch.ones_like(x))  # the input is untouched


def loaders(**kw):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 255, (24, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.arange(24) % 10
    common = dict(batch_size=8, device="cpu", mean=[0.5] * 3, std=[0.25] * 3, seed=3)
    return x, y, common


def test_cutout_changes_nothing_but_its_squares():
    x, y, common = loaders()
    plain = list(ArrayLoader(x, y, train=True, **common))
    cut = list(ArrayLoader(x, y, train=True, cutout=16, **common))
    for (a, ya), (b, yb) in zip(plain, cut):
        assert torch.equal(ya, yb)  # same order
        square = (b == 0).all(1, keepdim=True).expand_as(b)
        assert square.any() and torch.equal(a[~square], b[~square])  # same crops and flips elsewhere
        assert ((b == 0).all(1).sum((1, 2)) <= 256).all()
    test_plain = list(ArrayLoader(x, y, train=False, **common))
    test_cut = list(ArrayLoader(x, y, train=False, cutout=16, **common))
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(test_plain, test_cut))  # never at test time
    with pytest.raises(ValueError, match="cutout"):
        ArrayLoader(x, y, train=True, cutout=0, **common)


def test_cutout_is_part_of_the_run_identity_only_when_on():
    assert "cutout" not in DataCfg().model_dump()  # so run ids from before the option are unchanged
    assert DataCfg(cutout=16).model_dump()["cutout"] == 16
    base = RunConfig(model={"name": "resnet20"}, epochs=1)
    with_cutout = base.model_copy(update={"data": DataCfg(cutout=16)})
    assert base.run_id != with_cutout.run_id
    assert RunConfig.model_validate(with_cutout.model_dump()).run_id == with_cutout.run_id


def test_the_shake_shake_row_uses_cutout_16_and_gastaldis_recipe():
    runs, _ = expand(load_spec(ROOT / "experiments" / "cifar10_se_vs_baseline.yaml"), "paper")
    shake = [r for r in runs if r.model.name == "shake_shake26_2x96d"]
    assert len(shake) == 6  # plain and SE, 3 seeds
    for r in shake:
        assert r.data.cutout == 16 and r.data.augment == "crop_flip" and r.data.name == "cifar10"
        assert (r.optim.lr, r.optim.schedule, r.optim.nesterov, r.optim.weight_decay) == (0.2, "cosine", True, 1e-4)
        assert (r.epochs, r.batch_size, r.optim.warmup_epochs) == (1800, 128, 0.0)
    assert all(r.data.cutout is None for r in runs if r.model.name != "shake_shake26_2x96d")
