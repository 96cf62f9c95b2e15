"""The CUDA path: AMP, channels_last, torch.compile, the on-device loader, the SE tail's CUDA fallbacks, the
SE excitation forms (also inside CUDA graphs) and NCCL. Skipped (with the reason) on a machine without CUDA;
scripts/gpu_check.sh runs them on a lent GPU.

Each test compares the GPU against something that cannot be wrong in the same way: the CPU, the SE
reference implementation, or a second identical run.
"""

import copy
import json
import socket

import pytest
import torch
from torch import nn

from sebench.data import ArrayLoader, load_arrays
from sebench.engine import fit, train_epoch
from sebench.layers.blocks import Bottleneck
from sebench.layers import fused
from sebench.layers.se import SEConfig, set_se_form, set_se_impl
from sebench.models import build_model
from sebench.spec import DataCfg, ExecutionCfg, ModelCfg, OptimCfg, RunConfig
from sebench.store import read_jsonl

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                   reason="needs CUDA (run on a GPU machine: scripts/gpu_check.sh)")]
CUDA = torch.device("cuda")


def cfg(**changes) -> RunConfig:
    base = dict(experiment="cuda-test", profile="test", model=ModelCfg(name="resnet20", se={"variant": "se"}),
                data=DataCfg(name="synthetic", train_subset=256, test_subset=64),
                optim=OptimCfg(lr=0.05), epochs=2, batch_size=64, eval_batch_size=64, seed=1,
                execution=ExecutionCfg(device="cuda", progress=False))
    return RunConfig(**{**base, **changes})


@pytest.fixture
def full_fp32():
    """Convolutions in true fp32: cuDNN's default TF32 (10-bit mantissa) moves gradients by ~1e-2
    relative, which a comparison with the CPU would take for an error (seen on an H200)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def se_block(gate="sigmoid", squeeze="avg", variant="se"):
    torch.manual_seed(0)
    return Bottleneck(64, 16, 64, se=SEConfig(variant=variant, squeeze=squeeze, gate=gate, reduction=4))


def forward_backward(module, x):
    module.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    out = module(x * 1)
    out.backward(torch.ones_like(out))
    return out.detach(), [x.grad, *(p.grad for p in module.parameters())]


@pytest.mark.parametrize("gate, squeeze, variant", [("sigmoid", "avg", "se"), ("tanh", "max", "bump"),
                                                    ("relu", "none", "slow_squeeze_slow_excite")])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_se_tail_on_cuda_equals_the_reference_and_the_cpu(gate, squeeze, variant, layout, full_fp32):
    block = se_block(gate, squeeze, variant).train()
    x = torch.randn(4, 64, 8, 8).contiguous(memory_format=layout)
    cpu_out, cpu_grads = forward_backward(block, x)
    fused = copy.deepcopy(block).to(CUDA, memory_format=layout)
    ref = copy.deepcopy(fused)
    set_se_impl(fused, "fused")
    set_se_impl(ref, "reference")
    xc = x.to(CUDA).contiguous(memory_format=layout)
    (fo, fg), (ro, rg) = forward_backward(fused, xc), forward_backward(ref, xc)
    torch.testing.assert_close(fo, ro, atol=1e-5, rtol=1e-5)
    for a, b, c in zip(fg, rg, cpu_grads):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a.cpu(), c, atol=1e-3 * max(1.0, c.abs().max().item()), rtol=1e-3)
    torch.testing.assert_close(fo.cpu(), cpu_out, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_se_tail_under_autocast_on_cuda_is_finite_and_close_to_fp32(dtype):
    block = se_block().to(CUDA).train()
    x = torch.randn(8, 64, 16, 16, device=CUDA)
    ref_out, _ = forward_backward(block, x)
    with torch.autocast("cuda", dtype=dtype):
        out, grads = forward_backward(block, x)
    assert all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(out.float(), ref_out, atol=0.1, rtol=0.05)


def close_to(a, b, tol):
    """Elementwise to `tol`, absolute part relative to the reference's largest entry."""
    torch.testing.assert_close(a, b, atol=tol * max(1.0, b.abs().max().item()), rtol=tol)


@pytest.mark.parametrize("form", fused.FORMS)
@pytest.mark.parametrize("impl", fused.IMPLS)
@pytest.mark.parametrize("gate, squeeze, variant", [("sigmoid", "avg", "se"), ("tanh", "max", "bump"),
                                                    ("relu", "none", "slow_squeeze_slow_excite")])
def test_every_se_form_on_cuda_equals_the_reference(form, impl, gate, squeeze, variant, full_fp32):
    """Each excitation form (cuBLAS, cuBLASLt and cuDNN kernels on CUDA) against the reference SE
    (nn.Linear modules, textbook tail): training forward and backward, then inference, where the
    bottleneck takes the squeeze through its last 1x1 conv."""
    base = se_block(gate, squeeze, variant).to(CUDA, memory_format=torch.channels_last).train()
    ref, m = copy.deepcopy(base), copy.deepcopy(base)
    set_se_impl(ref, "reference")
    set_se_form(ref, "linear")
    set_se_impl(m, impl)
    set_se_form(m, form)
    x = torch.randn(4, 64, 8, 8, device=CUDA).contiguous(memory_format=torch.channels_last)
    (mo, mg), (ro, rg) = forward_backward(m, x), forward_backward(ref, x)
    close_to(mo, ro, 1e-5)
    for a, b in zip(mg, rg):
        close_to(a, b, 1e-4)
    m.eval(), ref.eval()
    with torch.inference_mode():
        close_to(m(x), ref(x), 1e-5)


@pytest.mark.parametrize("form", fused.FORMS)
def test_every_se_form_under_bf16_autocast_on_cuda_is_finite_and_close_to_fp32(form):
    block = se_block().to(CUDA).train()
    set_se_form(block, form)
    x = torch.randn(8, 64, 16, 16, device=CUDA)
    ref_out, _ = forward_backward(block, x)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, grads = forward_backward(block, x)
    assert all(torch.isfinite(g).all() for g in grads)
    torch.testing.assert_close(out.float(), ref_out, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("form", fused.FORMS)
def test_cuda_graphs_of_an_se_block_train_and_infer_as_eager(form, full_fp32):
    """What benchmarks/se_overhead.py --exec graphs times: a whole training step (forward, loss, backward,
    SGD step) and an inference forward, each captured once and replayed, give eager's losses, weights and
    outputs, also after the replays changed the weights (the inference graph must not keep a stale fold
    of the bottleneck's weights: fused.excite_through_1x1)."""
    torch.manual_seed(0)
    base = se_block().to(CUDA, memory_format=torch.channels_last)
    graphed, eager = copy.deepcopy(base), copy.deepcopy(base)
    set_se_form(graphed, form)
    set_se_form(eager, form)
    x = torch.randn(8, 64, 8, 8, device=CUDA).contiguous(memory_format=torch.channels_last)
    target = torch.randn_like(x)
    opt_g, opt_e = (torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (graphed, eager))

    def train(m, opt):
        m.train()
        loss = (m(x) - target).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up as torch's whole-network capture example does
        for _ in range(3):
            train(graphed, opt_g)
    torch.cuda.current_stream().wait_stream(side)
    for _ in range(3):
        train(eager, opt_e)
    g_train, g_infer = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
    graphed.train()
    opt_g.zero_grad(set_to_none=True)
    with torch.cuda.graph(g_train):  # capturing runs nothing: both models have had 3 steps
        static_loss = (graphed(x) - target).square().mean()
        static_loss.backward()
        opt_g.step()
    graphed.eval()
    with torch.cuda.graph(g_infer), torch.no_grad():
        static_out = graphed(x)
    for _ in range(3):
        g_train.replay()
        loss = train(eager, opt_e)
        close_to(static_loss, loss, 1e-5)
        g_infer.replay()
        eager.eval()
        with torch.no_grad():
            close_to(static_out, eager(x), 1e-4)
    for a, b in zip(graphed.parameters(), eager.parameters()):
        close_to(a, b, 1e-4)


def test_array_loader_on_cuda_gives_the_cpu_batches():
    data = load_arrays("synthetic", train_per_class=20, test_per_class=5)
    kw = dict(batch_size=32, train=True, mean=data.info.mean, std=data.info.std, seed=5)
    on_gpu = ArrayLoader(data.train_x, data.train_y, device=CUDA, **kw)
    on_cpu = ArrayLoader(data.train_x, data.train_y, device="cpu", **kw)
    for loader in (on_gpu, on_cpu):
        loader.set_epoch(3)
    pairs = list(zip(on_gpu, on_cpu))
    assert len(pairs) == len(on_cpu) > 1
    for (xg, yg), (xc, yc) in pairs:
        assert xg.device.type == "cuda" and yg.device.type == "cuda"
        assert torch.equal(yg.cpu(), yc)
        torch.testing.assert_close(xg.cpu(), xc, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("amp, channels_last", [("off", False), ("off", True), ("bf16", True), ("fp16", False)])
def test_fit_on_cuda_with_amp_and_channels_last(amp, channels_last, tmp_path):
    c = cfg(amp=amp, channels_last=channels_last)
    summary = fit(c, tmp_path / "run")
    assert summary.status == "finished" and summary.device.startswith("cuda")
    assert summary.amp == {"off": "off", "bf16": "bfloat16", "fp16": "float16"}[amp]
    assert summary.device_name == torch.cuda.get_device_name(0)
    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert len(metrics) == 2 and all(m["train_loss"] == m["train_loss"] for m in metrics)  # not NaN
    assert metrics[-1]["train_loss"] < metrics[0]["train_loss"] * 1.5
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["amp"]["used"] == summary.amp and env["cuda"] and env["cudnn"]
    assert summary.infer_img_s > 0


def test_fit_on_cuda_is_deterministic_when_asked(tmp_path):
    c = cfg(execution=ExecutionCfg(device="cuda", progress=False, deterministic=True))
    a, b = fit(c, tmp_path / "a"), fit(c, tmp_path / "b")
    for k in ("final_test_top1_err", "final_test_loss", "final_train_loss"):
        assert getattr(a, k) == getattr(b, k), k


def test_fit_on_cuda_with_torch_compile_matches_eager(tmp_path):
    eager = fit(cfg(epochs=1), tmp_path / "eager")
    compiled = fit(cfg(epochs=1, execution=ExecutionCfg(device="cuda", progress=False, compile=True)),
                   tmp_path / "compiled")
    assert compiled.status == "finished"
    assert compiled.final_train_loss == pytest.approx(eager.final_train_loss, rel=0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_nccl_process_group_all_reduce_and_ddp_step():
    """One GPU allows one NCCL rank: the backend sebench picks for CUDA initialises, reduces and carries a
    DistributedDataParallel training step."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from sebench.engine import distributed

    assert distributed.backend_for("cuda") == "nccl"
    torch.cuda.set_device(0)
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    try:
        world = distributed.current()
        assert world.size == 1 and dist.get_backend() == "nccl"
        t = torch.tensor([2.0, 3.0], device=CUDA)
        dist.all_reduce(t)
        assert t.tolist() == [2.0, 3.0]
        model = DistributedDataParallel(build_model("resnet20", 10).to(CUDA), device_ids=[0])
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        data = load_arrays("synthetic", train_per_class=8, test_per_class=2)
        loader = ArrayLoader(data.train_x, data.train_y, batch_size=16, train=True, device=CUDA,
                             mean=data.info.mean, std=data.info.std, seed=0)
        loader.set_epoch(1)
        stats = train_epoch(model, loader, opt, loss_fn=nn.CrossEntropyLoss())
        assert stats["n"] == 80 and stats["loss"] == stats["loss"]
    finally:
        dist.destroy_process_group()
