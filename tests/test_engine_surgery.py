"""`fit` applies architecture-agnostic SE (model.surgery) before training, and records its cost."""

from sebench.engine import fit
from sebench.spec import DataCfg, ExecutionCfg, ModelCfg, RunConfig, SurgeryCfg


def test_fit_applies_surgery(tmp_path):
    def run(surgery, name):
        cfg = RunConfig(model=ModelCfg(name="resnet20", surgery=surgery),
                        data=DataCfg(name="cifar10-embedded", train_subset=64, test_subset=20), epochs=1,
                        batch_size=32, execution=ExecutionCfg(threads=1, progress=False, device="cpu"))
        return fit(cfg, tmp_path / name)

    plain = run(None, "plain")
    se = run(SurgeryCfg(min_channels=32, latent_channels=16), "se")
    # resnet20: convs with min(in, out) >= 32 get an SE module 32->16->32 or 64->16->64
    assert se.params > plain.params and se.flops > plain.flops
    assert se.status == "finished"
