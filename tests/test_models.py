"""The model zoo pins the sources' facts: parameter counts (source 003; published CIFAR sizes) and FLOPs.

FLOPs are multiply-adds (the paper's unit), measured with torch.utils.flop_counter (which counts 2 per
multiply-add). The ImageNet ResNets use the paper's stride placement: the original Caffe release puts a
downsampling bottleneck's stride in its first 1x1 conv, which gives ResNet-50 3.86 G; torchvision's
placement (stride in the 3x3) gives 4.09 G, also checked below.
"""

import pytest
import torch

from sebench.bench import count_flops, count_params
from sebench.errors import UserError
from sebench.layers import se_modules
from sebench.models import MODELS, build_model


def params_m(name, **kw):
    return count_params(build_model(name, **kw)) / 1e6


def gflops(name, **kw):
    return count_flops(build_model(name, **kw), (3, 224, 224)) / 1e9


@pytest.mark.parametrize("kw, expected", [
    ({}, 25.6),
    ({"se": "se"}, 28.1),
    ({"se": {"reduction": 2}}, 45.7),
    ({"se": {"reduction": 4}}, 35.7),
    ({"se": {"reduction": 8}}, 30.7),
    ({"se": {"reduction": 16}}, 28.1),
    ({"se": {"reduction": 32}}, 26.9),
    ({"se": "se", "se_stages": [2]}, 25.6),
    ({"se": "se", "se_stages": [3]}, 25.7),
    ({"se": "se", "se_stages": [4]}, 26.4),
    ({"se": {"position": "after_3x3"}}, 25.8),
    ({"se": {"squeeze": "none"}}, 28.1),
])
def test_resnet50_params_seed003(kw, expected):
    assert params_m("resnet50", **kw) == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize("kw, expected", [
    ({}, 3.86), ({"se": "se"}, 3.87), ({"se": {"squeeze": "none"}}, 4.27),
])
def test_resnet50_gflops_paper_stride_placement(kw, expected):
    assert gflops("resnet50", **kw) == pytest.approx(expected, abs=0.02)


def test_torchvision_stride_placement_costs_more():
    assert gflops("resnet50", stride_in="3x3") == pytest.approx(4.09, abs=0.01)
    assert params_m("resnet50", stride_in="3x3") == pytest.approx(params_m("resnet50"), abs=1e-9)


@pytest.mark.parametrize("name, expected", [
    ("resnet20", 0.27), ("resnet110", 1.7), ("preact_resnet164", 1.7), ("wrn16_8", 11.0),
])
def test_cifar_sizes_as_published(name, expected):
    tol = 0.005 if expected < 1 else 0.05
    assert params_m(name) == pytest.approx(expected, abs=tol)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_runs_forward_with_and_without_se(name):
    size = MODELS[name].input_size
    side = 64 if size[1] > 32 else 32  # small inputs keep the test fast; global pooling adapts
    for se in (None, "se"):
        m = build_model(name, num_classes=7, se=se).eval()
        with torch.no_grad():
            assert m(torch.randn(2, 3, side, side)).shape == (2, 7)


def test_se_tags_follow_the_paper():
    m = build_model("resnet50", se="se")
    tags = list(se_modules(m))
    assert tags[:3] == ["SE_2_1", "SE_2_2", "SE_2_3"] and tags[-1] == "SE_5_3" and len(tags) == 16
    assert "SE_4_6" in tags
    assert list(se_modules(build_model("resnet20", se="se", se_stages=[3]))) == ["SE_3_1", "SE_3_2", "SE_3_3"]
    assert list(se_modules(build_model("cnn3", se="bump"))) == ["SE_2_1"]


def test_cnn3_se_replaces_second_conv_with_conv_plus_se():
    m = build_model("cnn3", se={"variant": "slow_squeeze_slow_excite"})
    assert m.se.channels == 64 and m.se.widths == [64, 8, 4, 8, 64]


@pytest.mark.parametrize("call, match", [
    (lambda: build_model("resnet51"), "allowed: 'resnet20'"),
    (lambda: build_model("resnet20", se="fast"), "allowed: 'se'"),
    (lambda: build_model("resnet20", se={"gate": "softmax"}), "allowed: 'sigmoid'"),
    (lambda: build_model("resnet20", se={"squeeze": "sum"}), "allowed: 'avg'"),
    (lambda: build_model("resnet20", se={"position": "inside"}), "allowed: 'standard'"),
    (lambda: build_model("resnet20", se={"latent_channels": 0}), "no hidden channels"),
    (lambda: build_model("resnet20", se="se", se_stages=[4]), "allowed: 1, 2, 3"),
    (lambda: build_model("resnet20", width=3), "takes no option"),
    (lambda: build_model("resnet50", stride_in="2x2"), "allowed: '1x1', '3x3'"),
    (lambda: build_model("cnn3", se={"position": "post"}), "allowed here: 'standard'"),
])
def test_user_mistakes_name_the_allowed_values(call, match):
    with pytest.raises(UserError, match=match):
        call()


def test_the_two_readings_of_the_3_layer_cnn():
    """arXiv 2304.06502's 3-layer CNN (see models.cifar.CNN3): parameters counted by hand, SE on the 64
    channels of the second conv in both (64 -> 4 -> 64 at r=16: 580 parameters)."""
    three_conv = 896 + 18_496 + 73_856 + 20_490  # convs 3->32->64->128 (padded), FC 2048->10
    example = 896 + 18_496 + 1_605_760 + 1_290  # convs 3->32->64 (unpadded), FC 12544->128->10
    for reading, plain in (("three_conv", three_conv), ("pytorch_example", example)):
        assert count_params(build_model("cnn3", 10, reading=reading)) == plain
        se = build_model("cnn3", 10, se="se", reading=reading)
        assert count_params(se) == plain + 580 and se(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_params(build_model("cnn3", 10)) == three_conv  # the default keeps the committed runs' network
    with pytest.raises(UserError, match="reading"):
        build_model("cnn3", 10, reading="mnist")
