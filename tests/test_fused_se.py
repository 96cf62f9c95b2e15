"""The fused SE tail equals the reference ops, forward and backward, in every configuration."""

import copy
import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sebench.engine.env import cpu_bf16_flag
from sebench.errors import UserError
from sebench.layers import fused
from sebench.layers.blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck
from sebench.layers.se import SEConfig, SqueezeExcite, set_se_impl
from sebench.models import build_model

TOL = dict(atol=1e-6, rtol=1e-6)
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


pytestmark = pytest.mark.usefixtures("one_thread")


def pair(module):
    ref = copy.deepcopy(module)
    set_se_impl(module, "fused")
    set_se_impl(ref, "reference")
    return module, ref


def run(fn, module, inputs, grad_out):
    module.zero_grad(set_to_none=True)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(module, *[t * 1 for t in leaves])  # non-leaf inputs, as inside a network
    out.backward(grad_out)
    grads = [t.grad for t in leaves] + [p.grad for p in module.parameters()]
    return out.detach(), grads


def assert_same(fn, module, inputs, grad_out, tol=TOL):
    fused_m, ref_m = pair(module)
    out_f, grads_f = run(fn, fused_m, inputs, grad_out)
    out_r, grads_r = run(fn, ref_m, inputs, grad_out)
    torch.testing.assert_close(out_f, out_r, **tol)
    assert len(grads_f) == len(grads_r)
    for a, b in zip(grads_f, grads_r):
        assert_grad_close(a, b, **tol)
    return out_f


def assert_grad_close(a, b, atol, rtol):
    """Elementwise to (atol, rtol), with atol relative to the tensor's largest entry: downstream of the
    SE (BN and conv backward over a whole batch) one-ulp differences in the SE's gradient add up."""
    torch.testing.assert_close(a, b, atol=atol * max(1.0, b.abs().max().item()), rtol=rtol)


@pytest.mark.parametrize("gate, squeeze, variant, layout", list(itertools.product(
    ("sigmoid", "tanh", "relu"), ("avg", "max", "none"), ("se", "slow_squeeze_slow_excite"), LAYOUTS)))
def test_tail_equals_reference(gate, squeeze, variant, layout):
    torch.manual_seed(0)
    fmt = LAYOUTS[layout]
    se = SqueezeExcite(32, gate=gate, squeeze=squeeze, variant=variant, reduction=4)
    x, sc, g = (torch.randn(3, 32, 6, 5).contiguous(memory_format=fmt) for _ in range(3))
    for relu in (True, False):
        out = assert_same(lambda m, a, b: fused.se_tail(m, a, b, relu=relu), se, [x, sc], g)
        assert out.is_contiguous(memory_format=fmt)
    out = assert_same(lambda m, a: m(a), se, [x], g)  # the SE module alone (x * s)
    assert out.is_contiguous(memory_format=fmt)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("block", ["basic", "bottleneck", "preact_basic", "preact_bottleneck"])
def test_blocks_standard_position_fused_equals_reference(block, layout):
    torch.manual_seed(0)
    fmt = LAYOUTS[layout]
    cfg = SEConfig(reduction=4)
    make = {"basic": lambda: BasicBlock(16, 32, 2, cfg),
            "bottleneck": lambda: Bottleneck(32, 8, 32, 1, 1, cfg),
            "preact_basic": lambda: PreActBasicBlock(16, 32, 2, cfg),
            "preact_bottleneck": lambda: PreActBottleneck(32, 8, 32, 1, cfg)}[block]
    m = make().train().to(memory_format=fmt)
    x = torch.randn(4, m.conv1.in_channels, 8, 8).contiguous(memory_format=fmt)
    with torch.no_grad():
        g = torch.randn_like(m(x))
    out = assert_same(lambda mod, a: mod(a), m, [x], g, tol=dict(atol=1e-5, rtol=1e-4))
    assert out.is_contiguous(memory_format=fmt)
    # inference (the in-place path) too
    f, r = pair(m.eval())
    with torch.inference_mode():
        torch.testing.assert_close(f(x), r(x), **TOL)


def test_gradcheck_float64():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    s = torch.rand(2, 3, dtype=torch.float64, requires_grad=True)
    sc = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    for relu, shortcut in ((True, sc), (False, sc), (False, None)):
        inputs = (x, s) if shortcut is None else (x, s, shortcut)
        assert torch.autograd.gradcheck(
            lambda *t: fused.scale_add_relu(t[0], t[1], t[2] if len(t) > 2 else None, relu=relu), inputs)
    # the whole SE with the linked squeeze (x's gradient formed in the squeeze's backward)
    se = SqueezeExcite(3, reduction=1, gate="tanh").double()
    assert torch.autograd.gradcheck(lambda a, b: fused.se_tail(se, a, b, relu=True), (x, sc))
    assert torch.autograd.gradcheck(lambda a: se(a), (x,))


def test_channel_dot_chunked_equals_plain(monkeypatch):
    g, x = torch.randn(5, 7, 6, 6), torch.randn(5, 7, 6, 6)
    monkeypatch.setattr(fused, "_CHUNK_BYTES", 2 * 7 * 36 * 4)  # 2 samples per chunk, a short last one
    for fmt in LAYOUTS.values():
        a, b = g.contiguous(memory_format=fmt), x.contiguous(memory_format=fmt)
        torch.testing.assert_close(fused.channel_dot(a, b), (g * x).sum((2, 3)), **TOL)


def test_inputs_untouched_and_inplace_only_when_asked():
    se = SqueezeExcite(8, reduction=2).eval()
    x, sc = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 4, 4)
    x0 = x.clone()
    with torch.no_grad():
        expected = torch.relu(se.reference_forward(x) + sc)
        torch.testing.assert_close(fused.se_tail(se, x, sc, relu=True), expected, **TOL)
        assert torch.equal(x, x0)
        torch.testing.assert_close(fused.scale_add_relu(x, se.excite(x), sc), expected, **TOL)
        assert torch.equal(x, x0)
        out = fused.se_tail(se, x, sc, relu=True, inplace=True)
    assert out.data_ptr() == x.data_ptr()
    torch.testing.assert_close(out, expected, **TOL)


def test_gate_hooks_see_the_same_values_and_retain_graph():
    torch.manual_seed(0)
    se = SqueezeExcite(8, reduction=2)
    seen = []
    se.gate.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    sc = torch.randn(2, 8, 4, 4)
    out = fused.se_tail(se, x * 1, sc, relu=True)
    torch.testing.assert_close(seen[0], se.excite(x).detach())
    out.sum().backward(retain_graph=True)
    first = x.grad.clone()
    x.grad = None
    out.sum().backward()
    torch.testing.assert_close(x.grad, first)


def test_model_fused_equals_reference_and_impl_switch():
    torch.manual_seed(0)
    model = build_model("resnet20", se="se").train()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    fused_m, ref_m = pair(model)
    losses, grads = [], []
    for m in (fused_m, ref_m):
        loss = torch.nn.functional.cross_entropy(m(x), y)
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad for p in m.parameters()])
    torch.testing.assert_close(losses[0], losses[1], **TOL)
    for a, b in zip(*grads):
        assert_grad_close(a, b, atol=1e-5, rtol=1e-4)
    assert all(m.impl == "reference" for m in ref_m.modules() if isinstance(m, SqueezeExcite))
    with pytest.raises(UserError, match="allowed: 'fused', 'reference'"):
        set_se_impl(model, "fast")


def test_benchmark_quick_smoke():
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "se_overhead.py"
    for amp in ("off", "bf16"):
        argv = [sys.executable, str(script), "--quick", "--layouts", "channels_last", "--threads", "1",
                "--amp", amp, "--device", "cpu"]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        if amp == "bf16" and cpu_bf16_flag() is None:  # refused, with one message (test_bench checks it)
            assert proc.returncode == 2 and "no native bf16" in proc.stderr and not proc.stdout, proc
            continue
        assert proc.returncode == 0, proc.stderr
        assert f"amp {amp}" in proc.stdout.splitlines()[0] and "native bf16:" in proc.stdout.splitlines()[0]
        last = proc.stdout.strip().splitlines()[-1]
        assert re.fullmatch(rf"sebench SE overhead \(amp {amp}\): train -?\d+\.\d%, infer -?\d+\.\d% "
                            r"\(timm: train -?\d+\.\d%, infer -?\d+\.\d%\)", last), last


def test_buffer_reuse_only_when_nothing_else_holds_x():
    """grad_x goes into x's buffer only when autograd frees the graph and nobody else holds x."""
    torch.manual_seed(0)
    block = Bottleneck(32, 8, 32, 1, 1, SEConfig(reduction=4)).train()
    x = torch.randn(2, 32, 6, 6)
    decisions = []
    real = fused._may_overwrite

    def spy(t, *others):
        decisions.append(real(t, *others))
        return decisions[-1]

    def grads(hold_bn3=False, retain=False):
        block.zero_grad(set_to_none=True)
        held = []
        handle = block.bn3.register_forward_hook(lambda m, i, o: held.append(o)) if hold_bn3 else None
        inp = x.clone().requires_grad_()
        loss = block(inp * 1).square().sum()
        loss.backward(retain_graph=retain)
        if handle:
            handle.remove()
            snapshot = held[0].detach().clone()
            torch.testing.assert_close(held[0], snapshot)  # the hook's tensor was not overwritten
        return [inp.grad] + [p.grad.clone() for p in block.parameters()]

    fused._may_overwrite = spy
    try:
        base = grads()
        assert decisions[-1] is True
        for kw in ({"hold_bn3": True}, {"retain": True}):
            again = grads(**kw)
            assert decisions[-1] is False
            for a, b in zip(again, base):
                torch.testing.assert_close(a, b, **TOL)
    finally:
        fused._may_overwrite = real


def test_training_output_buffer_reused_only_when_free():
    """The tail's training output goes into the module's previous one when nothing else holds it; an
    output the caller kept is never overwritten; several steps equal the reference ops; eval drops it."""
    torch.manual_seed(0)
    block = Bottleneck(32, 8, 32, 1, 1, SEConfig(reduction=4)).train()
    fused_b, ref_b = pair(block)
    x = torch.randn(2, 32, 6, 6)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (fused_b, ref_b)]
    ptrs = []
    for step in range(3):
        outs = []
        for m, opt in zip((fused_b, ref_b), opts):
            out = m(x * 1)
            outs.append(out.detach().clone())
            if m is fused_b:
                ptrs.append(out.data_ptr())
            out.square().mean().backward()
            opt.step()
            opt.zero_grad()
            del out
        torch.testing.assert_close(outs[0], outs[1], **TOL)
    assert ptrs[1] == ptrs[0] and ptrs[2] == ptrs[0]  # steps 2 and 3 reused step 1's buffer
    kept = fused_b(x * 1)  # the caller keeps this output: the next step must not write into it
    kept.sum().backward()
    snapshot = kept.detach().clone()
    again = fused_b(x * 1)
    assert again.data_ptr() != kept.data_ptr()
    torch.testing.assert_close(kept.detach(), snapshot, atol=0, rtol=0)
    with torch.no_grad():
        fused_b.eval()(x)
    assert fused_b.se not in fused._SPARE  # evaluation does not hold a training buffer


def test_bn3_output_held_by_a_hook_is_left_intact():
    block = Bottleneck(32, 8, 32, 1, 1, SEConfig(reduction=4)).train()
    held = []
    block.bn3.register_forward_hook(lambda m, i, o: held.append(o))
    out = block(torch.randn(2, 32, 6, 6, requires_grad=True) * 1)
    before = held[0].detach().clone()
    out.sum().backward()
    assert torch.equal(held[0].detach(), before)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_excite_through_1x1_equals_first_layer_on_mean_of_bn_conv(layout):
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(8, 32, 1, bias=True), torch.nn.BatchNorm2d(32)
    fc = torch.nn.Linear(32, 4)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    z = torch.randn(3, 8, 7, 7).contiguous(memory_format=LAYOUTS[layout])

    def check():
        torch.testing.assert_close(fused.excite_through_1x1(z, conv, bn, fc), fc(bn(conv(z)).mean((2, 3))),
                                   atol=1e-5, rtol=1e-5)

    with torch.no_grad():
        check()
        # the folded weight is cached: each kind of change to what it came from must show
        bn.running_var.mul_(3)  # BN statistics (training updates them in place)
        check()
        torch.nn.init.normal_(conv.weight)  # a weight written in place (an optimizer step)
        check()
        fc.load_state_dict({"weight": torch.randn(4, 32), "bias": torch.randn(4)})
        check()
        bn.eps = 0.5
        check()
        fc.bias = None  # a parameter replaced
        check()
    with torch.inference_mode():
        check()
        assert fused.excite_through_1x1(z, conv, bn.train(), fc) is None  # batch statistics: not affine
        assert fused.excite_through_1x1(z, torch.nn.Conv2d(8, 32, 3), bn.eval(), fc) is None


def test_bottleneck_inference_fold_follows_training():
    """Eval, train a step, eval again: the second eval must use the new weights, not the cached fold."""
    torch.manual_seed(0)
    block = Bottleneck(32, 8, 32, 1, 1, SEConfig(reduction=4))
    ref = Bottleneck(32, 8, 32, 1, 1, SEConfig(reduction=4))
    ref.load_state_dict(block.state_dict())
    set_se_impl(ref, "reference")
    opt = torch.optim.SGD(block.parameters(), lr=0.5)
    x = torch.randn(4, 32, 6, 6)
    for _ in range(2):
        block.eval(), ref.eval()
        with torch.no_grad():
            torch.testing.assert_close(block(x), ref(x), atol=1e-5, rtol=1e-5)
        block.train()
        block(x).square().mean().backward()
        opt.step()
        opt.zero_grad()
        ref.load_state_dict(block.state_dict())


def test_flop_count_sees_only_the_textbook_squeeze():
    from sebench.bench import count_flops
    m = build_model("resnet50", se="se").to(memory_format=torch.channels_last)
    plain = build_model("resnet50")
    fc = sum(2 * s.widths[0] * s.widths[1] for s in m.modules() if isinstance(s, SqueezeExcite))
    assert count_flops(m) - count_flops(plain) == fc  # the two FC layers, nothing else


def test_hooks_on_the_se_module_see_its_input_and_output():
    torch.manual_seed(0)
    block = Bottleneck(32, 8, 32, 1, 1, SEConfig(reduction=4)).eval()
    seen = {}
    block.se.register_forward_pre_hook(lambda m, args: seen.__setitem__("in", args[0].clone()))
    block.se.register_forward_hook(lambda m, args, out: seen.__setitem__("out", out.clone()))
    x = torch.randn(2, 32, 6, 6)
    with torch.no_grad():
        block(x)
        torch.testing.assert_close(seen["out"], block.se.reference_forward(seen["in"]), **TOL)


def test_without_private_torch_hooks_training_runs_and_matches_the_reference(monkeypatch):
    """A torch without the two private functions buffer reuse needs: one warning, fresh buffers, and an
    SE-ResNet-20 that trains a few steps exactly as the reference ops do."""
    monkeypatch.delattr(torch._C, "_storage_Use_Count")
    monkeypatch.delattr(torch._C._autograd, "_get_current_graph_task_keep_graph")
    for name in ("_HAS_PRIVATE", "_REUSE", "_ALONE"):  # as in a fresh process
        monkeypatch.setattr(fused, name, None)
    monkeypatch.setattr(fused, "_SPARE", type(fused._SPARE)())
    torch.manual_seed(0)
    model = build_model("resnet20", se="se").train().to(memory_format=torch.channels_last)
    fused_m, ref_m = pair(model)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (4,))
    opts = [torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (fused_m, ref_m)]
    rng = torch.get_rng_state()
    with pytest.warns(RuntimeWarning, match="lacks torch._C._storage_Use_Count, "
                                            "torch._C._autograd._get_current_graph_task_keep_graph") as caught:
        for _ in range(3):
            losses = []
            for m, opt in zip((fused_m, ref_m), opts):
                loss = torch.nn.functional.cross_entropy(m(x), y)
                loss.backward()
                opt.step()
                opt.zero_grad()
                losses.append(loss.detach())
            torch.testing.assert_close(losses[0], losses[1], **TOL)
    assert len([w for w in caught if "lacks" in str(w.message)]) == 1  # once per process
    assert fused._REUSE == 0 and fused._HAS_PRIVATE is False
    assert torch.equal(torch.get_rng_state(), rng)  # the check draws nothing from the RNG
    for a, b in zip(fused_m.parameters(), ref_m.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(fused_m.eval()(x), ref_m.eval()(x), atol=1e-5, rtol=1e-4)
