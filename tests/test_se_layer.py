"""The SE module: widths, squeeze/gate operators, config validation, and equality with timm's SEModule."""

import pytest
import torch
from timm.layers import SEModule

from sebench.errors import UserError
from sebench.layers import SE_REGISTRY, SEConfig, SqueezeExcite, create_se, make_se_config


@pytest.mark.parametrize("variant, widths", [
    ("se", [64, 4, 64]),
    ("slow_squeeze", [64, 8, 4, 64]),
    ("slow_excite", [64, 4, 8, 64]),
    ("slow_squeeze_slow_excite", [64, 8, 4, 8, 64]),
    ("bump", [64, 4, 4, 64]),
])
def test_variant_widths_for_c64_r16(variant, widths):
    m = create_se(variant, 64, reduction=16)
    assert m.widths == widths
    linears = [l for l in m.mlp if isinstance(l, torch.nn.Linear)]
    assert [l.in_features for l in linears] + [linears[-1].out_features] == widths
    assert "->".join(map(str, widths)) in repr(m)  # extra_repr shows the actual widths


def test_registry_holds_every_variant():
    assert set(SE_REGISTRY) == {"se", "slow_squeeze", "slow_excite", "slow_squeeze_slow_excite", "bump"}


@pytest.mark.parametrize("kw, hidden", [
    ({"reduction": 16}, 4), ({"reduction": 3}, 21), ({"reduction": 128}, 1),  # at least 1, no rounding to 8
    ({"latent_channels": 64}, 64), ({"latent_channels": 0.25}, 16), ({"latent_channels": 64.0}, 64),
])
def test_hidden_width(kw, hidden):
    assert SEConfig(**kw).hidden(64) == hidden


@pytest.mark.parametrize("bad, fragment", [
    ({"latent_channels": 0}, "se.latent_channels"), ({"latent_channels": -3}, "se.latent_channels"),
    ({"latent_channels": 1.5}, "se.latent_channels"), ({"reduction": 0}, "se.reduction"),
    ({"variant": "nope"}, "allowed: 'se', 'slow_squeeze'"), ({"gate": "softmax"}, "allowed: 'sigmoid'"),
    ({"squeeze": "median"}, "allowed: 'avg', 'max', 'none'"), ({"position": "middle"}, "allowed: 'standard'"),
    ({"colour": 1}, "allowed: variant, reduction"),
])
def test_bad_config_raises_user_error_naming_allowed(bad, fragment):
    with pytest.raises(UserError) as err:
        make_se_config(bad)
    assert fragment in str(err.value)


def test_unknown_variant_name_in_create_se():
    with pytest.raises(UserError, match="allowed"):
        create_se("squeeze_learn", 8)


def test_matches_timm_semodule():
    torch.manual_seed(0)
    c, h = 32, 8
    ours = SqueezeExcite(c, reduction=4)
    ref = SEModule(c, rd_channels=h)
    with torch.no_grad():
        ours.mlp[0].weight.copy_(ref.fc1.weight.view(h, c))
        ours.mlp[0].bias.copy_(ref.fc1.bias)
        ours.mlp[2].weight.copy_(ref.fc2.weight.view(c, h))
        ours.mlp[2].bias.copy_(ref.fc2.bias)
    x = torch.randn(3, c, 7, 5, requires_grad=True)
    x2 = x.detach().clone().requires_grad_(True)
    y, y_ref = ours(x), ref(x2)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-6)


def test_squeeze_and_gate_operators():
    torch.manual_seed(0)
    x = torch.randn(2, 16, 4, 4)
    for squeeze, pooled in (("avg", x.mean((2, 3))), ("max", x.amax((2, 3)))):
        m = SqueezeExcite(16, squeeze=squeeze, reduction=4)
        assert torch.equal(m.squeeze_input(x), pooled)
    for gate, fn in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh), ("relu", torch.relu)):
        m = SqueezeExcite(16, gate=gate, reduction=4)
        torch.testing.assert_close(m.excite(x), fn(m.mlp(x.mean((2, 3)))))
        torch.testing.assert_close(m(x), x * fn(m.mlp(x.mean((2, 3))))[:, :, None, None])


def test_nosqueeze_is_1x1_convs_on_the_full_map():
    torch.manual_seed(0)
    m = SqueezeExcite(16, squeeze="none", reduction=4)
    x = torch.randn(2, 16, 5, 3)
    s = m.excite(x)
    assert s.shape == x.shape  # a gate per position
    # same parameter count as SE
    assert sum(p.numel() for p in m.parameters()) == sum(
        p.numel() for p in SqueezeExcite(16, reduction=4).parameters())
    # position (i, j) depends only on x[:, :, i, j]
    conv1, conv2 = m.mlp[0], m.mlp[2]
    manual = torch.sigmoid(conv2(torch.relu(conv1(x))))
    torch.testing.assert_close(s, manual)


def test_bias_off():
    m = SqueezeExcite(32, bias=False, variant="bump")
    assert all(l.bias is None for l in m.mlp if isinstance(l, torch.nn.Linear))
