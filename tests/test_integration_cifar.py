"""Integration: CIFAR ResNet-20 trained for 2 epochs on 4,000 images of the real CIFAR-10 JPEG mirror."""

import pytest

from sebench.engine import fit
from sebench.spec import DataCfg, ExecutionCfg, ModelCfg, OptimCfg, RunConfig


@pytest.mark.integration
def test_resnet20_two_epochs_on_the_mirror_learns(real_archive, real_cache, tmp_path):
    cfg = RunConfig(
        experiment="integration", model=ModelCfg(name="resnet20"),
        data=DataCfg(name="cifar10-jpeg", train_subset=4000, test_subset=1000),
        optim=OptimCfg(lr=0.1, momentum=0.9, weight_decay=1e-4, milestones=(0.5,)), epochs=2, batch_size=128,
        execution=ExecutionCfg(data_path=real_archive, cache_dir=str(real_cache), threads=1, progress=False))
    summary = fit(cfg, tmp_path / "run")
    assert summary.status == "finished"
    assert summary.dataset == "CIFAR-10 (JPEG q75 mirror) [train 4000, test 1000]"
    # Chance is 90% error; two epochs on 4,000 images reach roughly 55-65% on a CPU, and 75.1% was seen
    # on an H200 (TF32 convolutions take another path through these 64 noisy steps): "learns" is < 80%.
    assert summary.final_test_top1_err < 80.0, summary
    assert summary.final_test_top5_err < 30.0, summary
