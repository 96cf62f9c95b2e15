"""The ImageNet path end to end: the paper-profile SE-ResNet-50 run of experiments/se_imagenet.yaml trains
for one (two-step) epoch on a synthetic ImageFolder tree with DataLoader workers, evaluates, and writes its
records. Only what must change to run tiny is overridden; the recipe (model, SE, optimizer, schedule,
augmentation, 224-px crops) is the spec's own.

No CLI variant: `sebench run` has no option to pick one row, and the paper profile is 30 ResNet/ResNeXt runs.
"""

import functools
import json
import math
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from sebench.data import folder
from sebench.engine.fit import fit
from sebench.layers import se_modules, set_se_impl
from sebench.models import build_model
from sebench.spec import expand, load_spec

SPEC = Path(__file__).resolve().parents[1] / "experiments" / "se_imagenet.yaml"
CLASSES = ("n01", "n02", "n03", "n04", "n05", "n06")  # 6 > 5, so top-5 error is not trivially 0
# 8 training images = 2 steps of 4; 6 validation images = 1 batch at the spec's eval batch of 500.
TRAIN_PER_CLASS = (2, 2, 1, 1, 1, 1)
SE_RESNET50_1000_PARAMS = 28_088_024  # the paper's 28.1M (DESIGN.md)


@pytest.fixture
def imagenet_tree(tmp_path) -> Path:
    """root/{train,val}/<class>/ of small images in odd sizes and aspect ratios, so RandomResizedCrop and
    the resize-256/center-crop-224 eval path both upsample non-square inputs; JPEG and PNG mixed, plus a
    grayscale JPEG (ImageNet has some; the loader must convert it to RGB)."""
    g = torch.Generator().manual_seed(0)
    sizes = [(40, 64), (64, 40), (48, 48), (57, 43), (41, 61)]  # (height, width)
    root, k = tmp_path / "imagenet-tiny", 0
    for split, counts in (("train", TRAIN_PER_CLASS), ("val", (1,) * len(CLASSES))):
        for cls, n in zip(CLASSES, counts):
            (root / split / cls).mkdir(parents=True)
            for i in range(n):
                h, w = sizes[k % len(sizes)]
                px = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).numpy()
                img = Image.fromarray(px).convert("L" if k == 2 else "RGB")
                img.save(root / split / cls / f"{cls}_{i}.{'png' if k % 2 else 'JPEG'}")
                k += 1
    return root


def _mark_worker(folder_dir: Path, worker_id: int, _seed=folder.seed_worker) -> None:
    """worker_init_fn that leaves a file per worker process (pid), then seeds as the loader does."""
    (folder_dir / f"{worker_id}-{os.getpid()}").touch()
    _seed(worker_id)


def paper_row(overrides=None):
    """The paper profile's SE-ResNet-50 run (seed 0), expanded from the real spec."""
    runs, _ = expand(load_spec(SPEC), "paper", overrides)
    (rc,) = [r for r in runs if r.labels == {"model": "ResNet-50", "se": "SENet"} and r.seed == 0]
    return rc


@pytest.mark.integration
def test_paper_se_resnet50_trains_and_evaluates_on_imagefolder(imagenet_tree, tmp_path, monkeypatch):
    workers_seen = tmp_path / "workers"
    workers_seen.mkdir()
    monkeypatch.setattr(folder, "seed_worker", functools.partial(_mark_worker, workers_seen))
    paper = paper_row()
    # It is the paper recipe we shrink, not a stand-in.
    assert (paper.model.name, paper.model.se.variant, paper.model.se.reduction) == ("resnet50", "se", 16)
    assert (paper.data.name, paper.data.augment, paper.data.image_size) == ("imagefolder", "rrc_flip", 224)
    assert (paper.epochs, paper.batch_size, paper.optim.lr) == (100, 1024, 0.6)
    assert paper.model.num_classes is None  # the class count comes from the folder tree

    overrides = {"epochs": 1, "batch_size": 4,
                 "benchmark": {"batch_size": 1, "warmup": 0, "iters": 1},  # ResNet-50 at 224 on CPU
                 "execution": {"data_path": str(imagenet_tree), "num_workers": 2, "threads": 2,
                               "progress": False}}
    cfg = paper_row(overrides)
    # Nothing else moved: the tiny run is the paper run with only these keys changed.
    strip = lambda d: {k: v for k, v in d.items() if k not in overrides}  # noqa: E731
    assert strip(cfg.model_dump()) == strip(paper.model_dump())
    assert cfg.execution.num_workers == 2  # DataLoader worker processes decode the images

    run_dir = tmp_path / "run"
    summary = fit(cfg, run_dir)

    assert summary.status == "finished"
    # Images were decoded in worker processes (2 for train, 2 for eval), not in this one.
    pids = {int(f.name.split("-")[1]) for f in workers_seen.iterdir()}
    assert len(pids) == 4 and os.getpid() not in pids
    assert json.loads((run_dir / "summary.json").read_text()) == summary.to_json()
    for key in ("final_test_top1_err", "final_test_top5_err"):
        assert math.isfinite(getattr(summary, key)) and 0 <= getattr(summary, key) <= 100, (key, summary)
    assert math.isfinite(summary.final_train_loss) and math.isfinite(summary.final_test_loss)
    assert summary.dataset == "ImageFolder(imagenet-tiny)"
    assert summary.input_size == [3, 224, 224]
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["epoch"] == 1
    # SE-ResNet-50 with a 6-way fc instead of the 1000-way one (2048 weights + 1 bias per class).
    assert summary.params == SE_RESNET50_1000_PARAMS - 2049 * (1000 - len(CLASSES))
    assert round(summary.flops / 1e9, 2) == 3.86  # the paper's 3.87 less the smaller fc

    # The trained weights are an SE model's: they load strictly into SE-ResNet-50 with 16 SE blocks, and
    # the fused and reference SE paths agree on them.
    state = torch.load(run_dir / "ckpt" / "last.pt", map_location="cpu", weights_only=True)
    model = build_model("resnet50", len(CLASSES), se=cfg.model.se).eval()
    model.load_state_dict(state["model"])
    assert len(se_modules(model)) == 16
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        fused = model(x)
        assert set_se_impl(model, "reference") == 16
        torch.testing.assert_close(model(x), fused, rtol=1e-4, atol=1e-4)


def test_set_se_impl_is_exported_from_layers():
    from sebench.layers import SqueezeExcite

    model = torch.nn.Sequential(SqueezeExcite(8), torch.nn.ReLU(), SqueezeExcite(8))
    assert set_se_impl(model, "reference") == 2
    assert all(m.impl == "reference" for m in model if isinstance(m, SqueezeExcite))
