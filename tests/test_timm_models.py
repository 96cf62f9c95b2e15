"""timm integration: sebench's SE as timm's attention layer, and the timm/torchvision zoo entries."""

import pytest
import torch

from sebench.bench import count_params
from sebench.errors import UserError
from sebench.layers import se_modules
from sebench.layers.se import SqueezeExcite, set_se_impl
from sebench.models import MODELS, build_model, stage_ids
from sebench.models.timm_models import TIMM_ZOO, se_attn_layer, timm_resnet


pytestmark = pytest.mark.usefixtures("one_thread")


def test_our_se_as_timm_attn_layer_matches_seresnet50_params():
    import timm

    ours = timm.create_model("resnet50", pretrained=False, block_args=dict(attn_layer=se_attn_layer("se")))
    theirs = timm.create_model("seresnet50", pretrained=False)
    assert count_params(ours) == count_params(theirs)  # C // 16 is already a multiple of 8 here
    se = [m for m in ours.modules() if isinstance(m, SqueezeExcite)]
    assert len(se) == 16 and se[0].widths == [256, 16, 256] and se[-1].widths == [2048, 128, 2048]
    assert count_params(timm_resnet("resnet50", se={"reduction": 8})) > count_params(ours)


def test_timm_block_with_our_se_fused_equals_reference():
    torch.manual_seed(0)
    model = timm_resnet("resnet18", se="se").train()
    ref = __import__("copy").deepcopy(model)
    set_se_impl(ref, "reference")
    x = torch.randn(2, 3, 64, 64)
    out = []
    for m in (model, ref):
        y = m(x)
        y.logsumexp(1).sum().backward()
        out.append((y.detach(), [p.grad for p in m.parameters()]))
    torch.testing.assert_close(out[0][0], out[1][0], atol=1e-5, rtol=1e-5)
    for a, b in zip(out[0][1], out[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5 * max(1.0, b.abs().max().item()), rtol=1e-4)


def test_zoo_entries_registered_with_honest_descriptions():
    for name in ("vgg16", "inception_resnet_v2"):
        assert name in MODELS and MODELS[name].num_classes == 1000
        assert stage_ids(name) == ()
    assert MODELS["inception_resnet_v2"].input_size == (3, 299, 299)
    assert MODELS["vgg16"].input_size == (3, 224, 224)
    assert "BN" in MODELS["vgg16"].description
    assert set(TIMM_ZOO) <= set(MODELS)
    # no substitutes left: BN-Inception, MobileNet and ShuffleNet v1 are the zoo's own (test_zoo_sources.py)
    assert not any("closest available" in e.description for e in MODELS.values())


def test_inception_resnet_v2_se_on_every_residual_branch():
    model = build_model("inception_resnet_v2", num_classes=10, se={"reduction": 16})
    mods = se_modules(model)
    assert len(mods) == 10 + 20 + 9 + 1  # Block35 x10, Block17 x20, Block8 x9 + the final Block8
    assert {m.channels for m in mods.values()} == {320, 1088, 2080}


@pytest.mark.parametrize("name", list(TIMM_ZOO))
def test_only_the_standard_position_and_no_stages(name):
    with pytest.raises(UserError, match="allowed here: 'standard'"):
        build_model(name, se={"position": "post"})
    with pytest.raises(UserError, match="has no stage"):
        build_model(name, se="se", se_stages=[2])


def test_se_attn_layer_needs_a_config():
    with pytest.raises(UserError):
        se_attn_layer(None)
