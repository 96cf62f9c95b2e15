"""Architecture-agnostic SE surgery (source 000) on timm and torchvision models."""

import pytest
import torch
from torch import nn

from sebench.bench import count_params
from sebench.errors import UserError
from sebench.layers.se import SEConfig, SqueezeExcite, set_se_impl
from sebench.surgery import ConvSE, add_se, apply_surgery, surgery_modules


pytestmark = pytest.mark.usefixtures("one_thread")


def tv(name, **kw):
    import torchvision.models as tvm
    return getattr(tvm, name)(weights=None, **kw)


def timm_model(name, **kw):
    import timm
    return timm.create_model(name, pretrained=False, **kw)


def expected_extra(model, min_channels, latent, depthwise=True):
    """Parameters one 'se' module adds per qualifying conv: C*h + h + h*C + C."""
    total = 0
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and min(m.in_channels, m.out_channels) >= min_channels:
            if not depthwise and m.groups > 1 and m.groups == m.in_channels:
                continue
            c = m.out_channels
            h = latent if isinstance(latent, int) else max(1, int(c * latent))
            total += 2 * c * h + h + c
    return total


MODELS = {
    "tv_resnet50": lambda: tv("resnet50"),
    "tv_mobilenet_v2": lambda: tv("mobilenet_v2"),
    "tv_mobilenet_v3_small": lambda: tv("mobilenet_v3_small"),
    "tv_efficientnet_b0": lambda: tv("efficientnet_b0"),
    "tv_shufflenet_v2": lambda: tv("shufflenet_v2_x0_5"),
    "timm_resnet50": lambda: timm_model("resnet50"),
    "timm_mobilenetv3": lambda: timm_model("mobilenetv3_small_100"),
    "timm_efficientnet_b0": lambda: timm_model("efficientnet_b0"),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_surgery_on_timm_and_torchvision_models(name):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
    params = count_params(model)
    min_channels = 48
    extra = expected_extra(model, min_channels, 16)
    added = add_se(model, min_channels=min_channels, latent_channels=16)
    assert added > 0 and added == len(surgery_modules(model))
    assert count_params(model) - params == extra
    with torch.no_grad():
        after = model(x)
    assert after.shape == before.shape
    assert add_se(model, min_channels=min_channels, latent_channels=16) == 0  # never twice
    assert count_params(model) - params == extra


def test_counts_follow_min_channels_and_depthwise():
    model = tv("mobilenet_v2")
    n_all = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d)
                and min(m.in_channels, m.out_channels) >= 128)
    n_dw = sum(1 for m in model.modules() if isinstance(m, nn.Conv2d)
               and min(m.in_channels, m.out_channels) >= 128 and m.groups == m.in_channels > 1)
    assert 0 < n_dw < n_all
    assert add_se(tv("mobilenet_v2")) == n_all  # defaults: min_channels 128, latent 64
    assert add_se(model, depthwise=False) == n_all - n_dw
    assert add_se(tv("mobilenet_v2"), min_channels=10_000) == 0


def test_grouped_conv_gets_se_over_out_channels_and_fraction_width():
    model = nn.Sequential(nn.Conv2d(64, 128, 3, padding=1, groups=4), nn.ReLU(),
                          nn.Conv2d(128, 256, 1))
    assert add_se(model, min_channels=64, latent_channels=0.25, se="slow_excite") == 2
    assert model[0].se.widths == [128, 32, 64, 128]
    assert model[2].se.widths == [256, 64, 128, 256]
    assert model[0].out_channels == 128 and model[0].weight.shape == (128, 16, 3, 3)  # passthrough
    assert model(torch.randn(1, 64, 8, 8)).shape == (1, 256, 8, 8)


def test_width_from_se_config_and_family_options():
    model = nn.Sequential(nn.Conv2d(32, 64, 1), nn.Conv2d(64, 64, 1))
    cfg = {"variant": "bump", "reduction": 8, "gate": "tanh", "squeeze": "max", "bias": False}
    assert add_se(model, min_channels=0, latent_channels=None, se=cfg) == 2
    se = model[1].se
    assert se.widths == [64, 8, 8, 64] and se.cfg.gate == "tanh" and se.squeeze == "max"
    assert not any(n.endswith("bias") for n, _ in se.named_parameters())
    model2 = nn.Sequential(nn.Conv2d(32, 64, 1))
    add_se(model2, min_channels=0, latent_channels=None, se=SEConfig(reduction=4))
    assert model2[0].se.widths == [64, 16, 64]


def test_exclude_by_name_pattern_and_type():
    model = tv("resnet50")
    n = add_se(tv("resnet50"))
    assert add_se(model, exclude=["layer4", "layer3.*.conv2"]) == n - 10 - 6
    assert not any(k.startswith("layer4") for k in surgery_modules(model))
    import torchvision.models.resnet as tvr
    assert add_se(tv("resnet50"), exclude=[tvr.Bottleneck]) == 0


def test_shared_conv_wrapped_once():
    conv = nn.Conv2d(8, 8, 1)
    model = nn.Sequential(conv, nn.ReLU(), conv)
    assert add_se(model, min_channels=0, latent_channels=2) == 1
    assert model[0] is model[2] and isinstance(model[0], ConvSE)


def test_surgery_model_trains_and_fused_equals_reference():
    torch.manual_seed(0)
    model = tv("resnet18").train()
    add_se(model, min_channels=64, latent_channels=8)
    ref = __import__("copy").deepcopy(model)
    assert set_se_impl(ref, "reference") == len(surgery_modules(model))
    x = torch.randn(2, 3, 64, 64)
    outs = []
    for m in (model, ref):
        loss = m(x).logsumexp(1).sum()
        loss.backward()
        outs.append((loss.detach(), [p.grad for p in m.parameters()]))
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-6)
    for a, b in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_apply_surgery_from_a_spec_mapping():
    model = tv("resnet18")
    assert apply_surgery(model, None) == 0 and apply_surgery(model, {}) == 0
    assert apply_surgery(model, {"min_channels": 256, "latent_channels": 32}) == 8
    assert all(isinstance(m.se, SqueezeExcite) and m.se.widths[1] == 32
               for m in surgery_modules(model).values())


@pytest.mark.parametrize("kwargs, match", [
    ({"min_channels": -1}, "min_channels"),
    ({"min_channels": "128"}, "min_channels"),
    ({"latent_channels": 0}, "no hidden width"),
    ({"latent_channels": 2.5}, "no hidden width"),
    ({"latent_channels": True}, "no hidden width"),
    ({"se": {"position": "post"}}, "allowed here: 'standard'"),
    ({"se": "turbo"}, "allowed: 'se'"),
    ({"se": {"reduction": 8}}, "width is given twice"),
    ({"se": 3}, "se must be"),
    ({"exclude": [3]}, "exclude takes"),
    ({"depthwise": "no"}, "depthwise"),
])
def test_bad_arguments_raise_user_error(kwargs, match):
    with pytest.raises(UserError, match=match):
        add_se(nn.Sequential(nn.Conv2d(3, 8, 1)), **kwargs)


def test_apply_surgery_unknown_key_and_non_module():
    with pytest.raises(UserError, match="allowed: min_channels"):
        apply_surgery(nn.Conv2d(3, 3, 1), {"min_chanels": 3})
    with pytest.raises(UserError, match="nn.Module"):
        add_se("resnet50")
