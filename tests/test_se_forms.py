"""Excitation forms (sebench.layers.fused: linear, conv1x1, functional, mm): every form, fused or reference,
gives the reference SE's outputs and gradients, keeps the state_dict and the run id, and keeps the gate's
hooks (the excitation analysis) and the bottleneck's inference shortcut working."""

import copy
import itertools
import typing
from pathlib import Path

import pytest
import torch

from sebench.analysis.excitation import ExcitationRecorder
from sebench.errors import UserError
from sebench.layers import fused
from sebench.layers.blocks import BasicBlock, Bottleneck
from sebench.layers.se import Form, SEConfig, SqueezeExcite, se_modules, set_se_form, set_se_impl
from sebench.models import build_model

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
# F.conv2d, mm and addmm sum in different orders: a few ulps apart, scaled by the tensor's largest entry
TOL = dict(atol=1e-5, rtol=1e-5)

pytestmark = pytest.mark.usefixtures("one_thread")


def as_reference(module):
    """The reference SE: today's nn.Linear modules and the textbook tail ops."""
    ref = copy.deepcopy(module)
    set_se_impl(ref, "reference")
    set_se_form(ref, "linear")
    return ref


def with_form(module, form, impl):
    m = copy.deepcopy(module)
    set_se_impl(m, impl)
    set_se_form(m, form)
    return m


def run(fn, module, inputs, grad_out):
    module.zero_grad(set_to_none=True)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = fn(module, *[t * 1 for t in leaves])  # non-leaf inputs, as inside a network
    out.backward(grad_out)
    return out.detach(), [t.grad for t in leaves] + [p.grad for p in module.parameters()]


def assert_close(a, b):
    torch.testing.assert_close(a, b, atol=TOL["atol"] * max(1.0, b.abs().max().item()), rtol=TOL["rtol"])


def assert_same(fn, module, ref, inputs, grad_out):
    out, grads = run(fn, module, inputs, grad_out)
    out_r, grads_r = run(fn, ref, inputs, grad_out)
    assert_close(out, out_r)
    assert len(grads) == len(grads_r)
    for a, b in zip(grads, grads_r):
        assert (a is None) == (b is None)
        if a is not None:
            assert_close(a, b)
    return out


@pytest.mark.parametrize("form, impl, gate_variant, squeeze, layout", list(itertools.product(
    fused.FORMS, fused.IMPLS, [("sigmoid", "se"), ("tanh", "slow_squeeze_slow_excite"), ("relu", "bump")],
    ("avg", "max", "none"), LAYOUTS)))
def test_every_form_equals_the_reference_se(form, impl, gate_variant, squeeze, layout):
    gate, variant = gate_variant
    torch.manual_seed(0)
    fmt = LAYOUTS[layout]
    se = SqueezeExcite(32, gate=gate, squeeze=squeeze, variant=variant, reduction=4,
                       bias=variant != "bump")  # one variant without biases: the forms' bias=None path
    m, ref = with_form(se, form, impl), as_reference(se)
    x, sc, g = (torch.randn(3, 32, 6, 5).contiguous(memory_format=fmt) for _ in range(3))
    for relu in (True, False):
        out = assert_same(lambda mod, a, b: fused.se_tail(mod, a, b, relu=relu), m, ref, [x, sc], g)
        assert out.is_contiguous(memory_format=fmt)
    assert_same(lambda mod, a: mod(a), m, ref, [x], g)  # the SE module alone (x * s)
    with torch.no_grad():  # the no-grad paths (and x's buffer written in place when allowed)
        expected = torch.relu(ref(x) + sc)
        assert_close(fused.se_tail(m, x.clone(), sc, relu=True, inplace=True), expected)
        assert_close(m.excite(x), ref.excite(x))


@pytest.mark.parametrize("form, impl", list(itertools.product(fused.FORMS, fused.IMPLS)))
@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_blocks_every_form_train_and_inference(form, impl, block, monkeypatch):
    """In a residual block: training forward and backward, and inference, where a bottleneck takes the
    squeeze through its last 1x1 conv (excite_through_1x1) in the form's own ops."""
    torch.manual_seed(0)
    cfg = SEConfig(reduction=4)
    base = (BasicBlock(16, 32, 2, cfg) if block == "basic" else Bottleneck(32, 8, 32, 1, 1, cfg))
    m, ref = with_form(base, form, impl), as_reference(base)
    x = torch.randn(4, base.conv1.in_channels, 8, 8).contiguous(memory_format=torch.channels_last)
    m, ref = m.to(memory_format=torch.channels_last), ref.to(memory_format=torch.channels_last)
    with torch.no_grad():
        g = torch.randn_like(copy.deepcopy(ref)(x))  # a copy: BN's running statistics stay as m's
    assert_same(lambda mod, a: mod(a), m, ref, [x], g)
    m.eval(), ref.eval()
    with torch.inference_mode():
        expected = ref(x)
        assert_close(m(x), expected)
    if block == "bottleneck" and impl == "fused":
        calls = []
        real = fused.excite_through_1x1

        def spy(*args):
            out = real(*args)
            calls.append((args[-1], out is not None))
            return out
        monkeypatch.setattr(fused, "excite_through_1x1", spy)
        with torch.no_grad():
            assert_close(m(x), expected)
        assert calls == [(form, True)]  # the shortcut ran, in this form
        # no fold while a CUDA graph is captured (a cached one would be a constant in the graph)
        monkeypatch.setattr(fused, "_capturing", lambda t: True)
        with torch.no_grad():
            assert_close(m(x), expected)
        assert calls[1:] == [(form, False)]


def test_gradcheck_float64_every_form():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    sc = torch.randn(2, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    for form in fused.FORMS:
        se = SqueezeExcite(3, reduction=1, gate="tanh", form=form).double()
        assert torch.autograd.gradcheck(lambda a, b: fused.se_tail(se, a, b, relu=True), (x, sc))
        assert torch.autograd.gradcheck(lambda a: se(a), (x,))


def test_state_dict_and_run_id_identical_across_forms():
    from sebench.engine.builders import build_run_model
    from sebench.spec import load_spec, expand

    spec = load_spec(ROOT / "experiments" / "cifar10_se_vs_baseline.yaml")
    runs, _ = expand(spec, "quick")
    cfg = next(r for r in runs if r.model.se)
    states = {}
    for form in ("auto", *fused.FORMS):
        c = cfg.model_copy(update={"execution": cfg.execution.model_copy(update={"se_form": form})})
        assert c.run_id == cfg.run_id  # an execution detail, like the device
        torch.manual_seed(0)
        model = build_run_model(c, 10)
        assert {m.form for m in se_modules(model).values()} == {form}
        states[form] = model.state_dict()
    keys = list(states["auto"])
    for form, state in states.items():
        assert list(state) == keys, form
        for k in keys:
            assert torch.equal(state[k], states["auto"][k]), (form, k)
    # a checkpoint of one form loads into another
    model = build_model("resnet20", se="se")
    set_se_form(model, "conv1x1")
    model.load_state_dict(states["mm"])


def test_excitation_recorder_sees_the_same_gates_on_every_form():
    torch.manual_seed(0)
    model = build_model("resnet20", se="se").eval()
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2])
    means = {}
    for form in fused.FORMS:
        set_se_form(model, form)
        with torch.no_grad(), ExcitationRecorder(model, blocks="all") as rec:
            rec.set_labels(y)
            model(x)
        stats = rec.stats()
        means[form] = [stats.mean_gate(tag) for tag in rec.tags]
        assert stats.counts() == {"0": 2, "1": 2, "2": 2}
    for form in fused.FORMS:
        assert means[form] == pytest.approx(means["linear"], rel=1e-5)


def test_hooks_on_the_mlp_see_its_layers_on_every_form():
    """A hook on an MLP layer needs the module call: every form falls back to 'linear' while one is on."""
    torch.manual_seed(0)
    se = SqueezeExcite(16, reduction=4)
    x = torch.randn(2, 16, 3, 3)
    for form in fused.FORMS:
        se.form = form
        seen = []
        handle = se.mlp[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
        assert fused.excitation_form(se, x) == "linear"
        se(x)
        handle.remove()
        assert seen == [torch.Size([2, 16])], form
        assert fused.excitation_form(se, x) == form


def test_auto_form_follows_the_device_default(monkeypatch):
    se = SqueezeExcite(16, reduction=4)
    x = torch.randn(2, 16, 3, 3)
    assert se.form == "auto" and fused.excitation_form(se, x) == fused.DEFAULT_FORM["cpu"] == "linear"
    monkeypatch.setitem(fused.DEFAULT_FORM, "cpu", "mm")
    assert fused.excitation_form(se, x) == "mm"
    assert fused.excitation_form(se, x.to("meta")) == "linear"  # a device type without an entry
    set_se_form(se, "conv1x1")
    assert fused.excitation_form(se, x) == "conv1x1"


def test_unknown_form_is_one_user_error_naming_the_choices():
    model = build_model("resnet20", se="se")
    with pytest.raises(UserError, match="field 'form'.*allowed: 'auto', 'linear', 'conv1x1', 'functional', 'mm'"):
        set_se_form(model, "fast")
    with pytest.raises(UserError, match="allowed: 'auto'"):
        SqueezeExcite(16, form="Linear")
    assert typing.get_args(Form) == (fused.AUTO_FORM, *fused.FORMS)  # the spec's literal is the same list


def test_flops_are_the_same_on_every_form():
    from sebench.bench import count_flops
    model = build_model("resnet20", se="se")
    counts = set()
    for form in fused.FORMS:
        set_se_form(model, form)
        counts.add(count_flops(model))
    assert len(counts) == 1


def _benchmark():
    import importlib.util
    spec = importlib.util.spec_from_file_location("se_overhead", ROOT / "benchmarks" / "se_overhead.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_summaries_name_the_fastest_form_against_timm():
    bench = _benchmark()
    assert bench.resolve_forms(["default"], torch.device("cpu")) == [fused.DEFAULT_FORM["cpu"]]
    assert bench.resolve_forms(["mm", "all"], torch.device("cpu")) == ["mm", "linear", "conv1x1", "functional"]
    rows = []
    se, timm, none = bench.SUMMARY_MODEL, bench.TIMM_SE, bench.NONE
    over = {("linear", "train"): 60, ("linear", "infer"): 100, ("conv1x1", "train"): 25, ("conv1x1", "infer"): 30,
            ("functional", "train"): 50, ("functional", "infer"): 90}
    for exe in ("eager", "graphs"):
        for mode in ("train", "infer"):
            rows.append(dict(model=timm, form=none, impl=none, exec=exe, layout="channels_last", mode=mode,
                             amp="off", overhead=40.0 if mode == "train" else 25.0, vs_timm=None))
            for form in ("linear", "conv1x1", "functional"):
                rows.append(dict(model=se, form=form, impl="fused", exec=exe, layout="channels_last", mode=mode,
                                 amp="off", overhead=float(over[form, mode]) - (30 if exe == "graphs" else 0),
                                 vs_timm=1.0))
    lines = bench.form_lines(rows, "cuda")
    fastest = [line for line in lines if line.startswith("fastest form")]
    assert fastest == [
        f"fastest form of {se} (fused, eager, channels_last) on cuda: conv1x1: train +25.0% (timm +40.0%), "
        "infer +30.0% (timm +25.0%); at or below timm's: train yes, infer no; DEFAULT_FORM['cuda'] is 'linear'",
        f"fastest form of {se} (fused, graphs, channels_last) on cuda: conv1x1: train -5.0% (timm +40.0%), "
        "infer +0.0% (timm +25.0%); at or below timm's: train yes, infer yes; DEFAULT_FORM['cuda'] is 'linear'"]
    assert len(lines) == 1 + 6 + 2
    # the last line (README, gpu_check.sh, the smoke test): eager, fused, the device's default form
    assert bench.summary_line(rows, "cuda") == ("sebench SE overhead (amp off): train 60.0%, infer 100.0% "
                                                "(timm: train 40.0%, infer 25.0%)")
