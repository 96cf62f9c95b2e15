"""Where the SE sits in each residual block: force the gate to 0 and check what the block computes."""

import pytest
import torch
import torch.nn.functional as F

from sebench.errors import UserError
from sebench.layers import SEConfig
from sebench.layers.blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck


def zero_gate(block):
    """ReLU gate whose last layer outputs -1 everywhere: the gate is exactly 0."""
    last = block.se.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-1.0)
    return block


def make(cls, position, *args, **kw):
    torch.manual_seed(0)
    block = cls(*args, se=SEConfig(position=position, gate="relu", reduction=4), **kw).eval()
    # non-trivial BN statistics, so F(x) is not accidentally 0 or x
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return zero_gate(block)


def basic_residual(b, x):
    return b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x)))))


X = torch.randn(2, 16, 8, 8)


@torch.no_grad()
def test_basic_standard_gives_relu_x():
    b = make(BasicBlock, "standard", 16, 16)
    torch.testing.assert_close(b(X), F.relu(X))


@torch.no_grad()
def test_basic_identity_gives_relu_residual():
    b = make(BasicBlock, "identity", 16, 16)
    torch.testing.assert_close(b(X), F.relu(basic_residual(b, X)))


@torch.no_grad()
def test_basic_post_gives_zero():
    b = make(BasicBlock, "post", 16, 16)
    assert torch.count_nonzero(b(X)) == 0


@torch.no_grad()
def test_basic_pre_zeroes_the_residual_input_only():
    b = make(BasicBlock, "pre", 16, 16)
    torch.testing.assert_close(b(X), F.relu(basic_residual(b, torch.zeros_like(X)) + X))


@torch.no_grad()
def test_pre_sees_input_channels_and_others_output_channels():
    for pos, ch in (("pre", 16), ("standard", 32), ("identity", 32), ("post", 32)):
        b = BasicBlock(16, 32, 2, se=SEConfig(position=pos))
        assert b.se.channels == ch
        assert b(X).shape == (2, 32, 4, 4)


@torch.no_grad()
def test_bottleneck_after_3x3_sees_width_and_zeroes_the_3x3_output():
    b = make(Bottleneck, "after_3x3", 64, 16, 64)
    assert b.se.channels == 16
    x = torch.randn(2, 64, 8, 8)
    expected = F.relu(b.bn3(b.conv3(torch.zeros(2, 16, 8, 8))) + x)
    torch.testing.assert_close(b(x), expected)


@torch.no_grad()
def test_bottleneck_standard_and_identity():
    x = torch.randn(2, 64, 8, 8)
    b = make(Bottleneck, "standard", 64, 16, 64)
    torch.testing.assert_close(b(x), F.relu(x))
    b = make(Bottleneck, "identity", 64, 16, 64)
    res = b.bn3(b.conv3(F.relu(b.bn2(b.conv2(F.relu(b.bn1(b.conv1(x))))))))
    torch.testing.assert_close(b(x), F.relu(res))


@torch.no_grad()
def test_bottleneck_stride_placement():
    caffe = Bottleneck(64, 16, 128, stride=2, stride_in_1x1=True)
    tv = Bottleneck(64, 16, 128, stride=2, stride_in_1x1=False)
    assert caffe.conv1.stride == (2, 2) and caffe.conv2.stride == (1, 1)
    assert tv.conv1.stride == (1, 1) and tv.conv2.stride == (2, 2)


@torch.no_grad()
def test_preact_blocks_positions():
    x = torch.randn(2, 16, 8, 8)
    b = make(PreActBasicBlock, "standard", 16, 16)
    torch.testing.assert_close(b(x), x)  # no ReLU after the addition in pre-activation blocks
    b = make(PreActBasicBlock, "post", 16, 16)
    assert torch.count_nonzero(b(x)) == 0
    b = make(PreActBottleneck, "after_3x3", 16, 4, 16)
    assert b.se.channels == 4
    expected = x + b.conv3(F.relu(b.bn3(torch.zeros(2, 4, 8, 8))))
    torch.testing.assert_close(b(x), expected)
    b = make(PreActBottleneck, "identity", 16, 4, 16)
    res = b.conv3(F.relu(b.bn3(b.conv2(F.relu(b.bn2(b.conv1(F.relu(b.bn1(x)))))))))
    torch.testing.assert_close(b(x), res)


def test_after_3x3_not_in_basic_block():
    with pytest.raises(UserError, match="allowed here"):
        BasicBlock(16, 16, se=SEConfig(position="after_3x3"))
