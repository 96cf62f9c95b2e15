"""Parameter and FLOP counts against hand counts; throughput/latency report what they measured; both
benchmarks under benchmarks/ refuse emulated bf16."""

import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from sebench.bench import (benchmark, count_flops, count_params, cpu_isa, cpu_name, device_name, measure_latency,
                           measure_throughput)
from sebench.engine import env


def test_count_params_known_module():
    # conv 3->8 3x3 with bias: 8*3*9 + 8 = 224; BN(8): 16; linear 8->10: 90.
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(8, 10))
    assert count_params(net) == 224 + 16 + 90


def test_count_flops_single_conv_is_multiply_adds():
    conv = nn.Conv2d(3, 8, 3, padding=1)
    # every one of the 8 x 16 x 16 outputs takes 3 x 3 x 3 multiply-adds
    assert count_flops(conv, (3, 16, 16)) == 8 * 16 * 16 * 3 * 3 * 3
    assert conv.training  # mode restored


def _tiny() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 3))


def test_measure_throughput_keeps_batch_and_leaves_model_alone():
    net = _tiny()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for train in (True, False):
        r = measure_throughput(net, input_size=(3, 8, 8), batch_size=6, train=train, warmup=1, iters=3)
        assert r["batch_size"] == 6 and r["iters"] == 3 and r["device"] == "cpu" and r["train"] is train
        assert r["img_s"] > 0 and r["ms_min"] <= r["ms_per_batch"] <= r["ms_max"]
        assert r["img_s"] == 6 / (r["ms_per_batch"] / 1e3)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_latency_and_benchmark_record_their_settings():
    net = _tiny()
    lat = measure_latency(net, (3, 8, 8), "cpu", warmup=1, iters=3)
    assert lat["batch_size"] == 1 and lat["ms"] > 0
    b = benchmark(net, input_size=(3, 8, 8), batch_size=4, device="cpu", warmup=1, iters=2)
    assert b["params"] == count_params(net) and b["flops"] == count_flops(net, (3, 8, 8))
    assert b["train"]["batch_size"] == b["infer"]["batch_size"] == 4
    assert b["latency"]["batch_size"] == 1 and b["torch"] == torch.__version__ and b["device_name"]


def _benchmark_module(name):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loader_benchmark_refuses_emulated_bf16_with_one_message(monkeypatch, capsys):
    """benchmarks/loader_vs_reference.py --amp bf16 on a CPU without native bf16 stops before loading
    anything: the suite refuses such runs, and an emulated arm would time the emulation."""
    module = _benchmark_module("loader_vs_reference")
    monkeypatch.setattr(env, "cpu_bf16_flag", lambda: None)
    monkeypatch.setattr(module, "load_arrays", lambda *a, **k: pytest.fail("loaded data before refusing"))
    with pytest.raises(SystemExit) as stop:
        module.main(["--amp", "bf16", "--device", "cpu", "--data-path", "/nonexistent"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("no native bf16") == 1 and "drop --amp bf16" in err


def test_se_overhead_benchmark_refuses_emulated_bf16_on_cpu_only(monkeypatch, capsys):
    """benchmarks/se_overhead.py --amp bf16 on a CPU without native bf16 stops before building a model,
    with one message; on a GPU the CPU's flags do not matter, and fp32 is never refused."""
    module = _benchmark_module("se_overhead")
    monkeypatch.setattr(env, "cpu_bf16_flag", lambda: None)
    monkeypatch.setattr(module, "run", lambda *a, **k: pytest.fail("built models before refusing"))
    with pytest.raises(SystemExit) as stop:
        module.main(["--amp", "bf16", "--device", "cpu", "--quick"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("no native bf16") == 1 and "drop --amp bf16" in err
    assert module.parse_args(["--amp", "bf16", "--device", "cuda"]).amp == "bf16"
    assert module.parse_args(["--amp", "off", "--device", "cpu"]).amp == "off"


def test_cpu_device_name_carries_the_widest_extension():
    """Two CPUs a VM names alike ('AMD EPYC', AVX2-only and AVX-512) train at different speeds and run
    different kernels: the device name in a run's records tells them apart."""
    def info(flags):
        return f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 {flags}\n\nprocessor\t: 1\n"
    assert cpu_isa(info("avx avx2 fma")) == "avx2"
    assert cpu_isa(info("avx2 avx512f avx512bw avx512_bf16 avx512_vnni")) == "avx512_bf16"
    assert cpu_isa(info("avx2 avx512f avx512_bf16 amx_bf16 amx_tile")) == "amx_bf16"
    assert cpu_isa(info("avx2 avx512f")) == "avx512f"
    assert cpu_isa(info("sse4_2")) is None and cpu_isa("") is None
    assert cpu_isa(info("avx2_x")) is None  # whole flags only
    here = device_name("cpu")
    assert here.startswith(cpu_name())
    assert here == (f"{cpu_name()} [{cpu_isa()}]" if cpu_isa() else cpu_name())
