"""scripts/gpu_check.sh's CPU dry run: every step of the GPU check runs at toy sizes and leaves the files
the GPU run brings back (so a lent GPU's minutes are not spent finding a typo)."""

import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from sebench.engine.env import cpu_bf16_flag
from sebench.layers import fused

ROOT = Path(__file__).resolve().parents[1]


def dry_run(tmp_path, **env_extra):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "SEBENCH_CACHE": str(tmp_path / "cache"),
           "CUDA_VISIBLE_DEVICES": "", **env_extra}
    env.pop("SEBENCH_CIFAR10_JPEG", None)  # the dry run trains on the embedded subset
    started = time.monotonic()
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, time.monotonic() - started


@pytest.mark.integration
def test_gpu_check_forms_stage_dry_run(tmp_path):
    """The default stage (issue 38): the CUDA tests, then the SE forms benchmark (every form x impl, eager;
    CUDA graphs skipped with a line on a CPU), fp32 and, where the CPU has native bf16, bf16."""
    out, took = dry_run(tmp_path)
    assert {p.name for p in out.iterdir()} == {"env.txt", "pytest_cuda.log", "se_forms.log", "summary.txt"}
    cuda_log = (out / "pytest_cuda.log").read_text()
    assert "skipped" in cuda_log and "1 deselected" in cuda_log  # all skip here; torch.compile's test is left out
    log = (out / "se_forms.log").read_text()
    amps = 2 if cpu_bf16_flag() is not None else 1
    assert log.count("sebench SE overhead (amp ") == amps, log
    assert log.count("CUDA graphs: skipped on cpu") == amps, log
    for form in fused.FORMS:
        for impl in fused.IMPLS:
            row = rf"^sebench se_resnet50 \(3x3\) +{form} +{impl} +eager +channels_last +(train|infer) "
            assert sorted(re.findall(row, log, flags=re.M)) == sorted(["train", "infer"] * amps), (form, impl)
    summary = (out / "summary.txt").read_text()
    assert "F1. CUDA tests: rc 0" in summary, summary
    assert summary.count("F2. amp off: fastest form of sebench se_resnet50 (3x3) (fused, eager, channels_last) on "
                         "cpu: ") == 1, summary
    assert "F2. amp off: sebench SE overhead (amp off): train " in summary
    assert re.search(r"they belong in results/gpu/\d{4}-\d\d-\d\d-cpu-dry-run/", summary), summary
    assert took < 330, took  # the stage's default budget


@pytest.mark.integration
def test_gpu_check_dry_run_writes_every_output(tmp_path):
    out, _ = dry_run(tmp_path, GPU_CHECK_BUDGET_S="900", GPU_CHECK_STAGES="bench cuda runs")
    assert {p.name for p in out.iterdir()} == {"env.txt", "pytest_cuda.log", "bench.log", "runs.log",
                                               "runs.tar.gz", "summary.txt"}
    assert "torch" in (out / "env.txt").read_text()
    assert "skipped" in (out / "pytest_cuda.log").read_text()  # no CUDA here: the CUDA tests skip
    bench = (out / "bench.log").read_text()
    native = cpu_bf16_flag() is not None  # both benchmarks refuse emulated bf16: fp32 alone without the flag
    amps = 2 if native else 1
    assert bench.count("sebench SE overhead (amp ") == amps and bench.count("\nspeedup: ") == 2, bench
    assert bench.count("sebench SE overhead (amp bf16)") == amps - 1, bench
    loop_amp = "bf16" if native else "off"
    assert bench.count("== loader_vs_reference.py --model resnet") == 2
    assert bench.count(f"== loader_vs_reference.py --model resnet20 --amp {loop_amp}\n") == 1, bench
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
        summaries = [json.load(tar.extractfile(n)) for n in names if n.endswith("summary.json")]
    assert not any("/ckpt" in n for n in names)
    assert len(summaries) == 6 and all(s["status"] == "finished" for s in summaries)  # seed 0's six rows
    assert {s["seed"] for s in summaries} == {0}
    summary = (out / "summary.txt").read_text()
    assert "4. runs: 6 finished" in summary and f"outputs in {out}" in summary


@pytest.mark.integration
def test_gpu_check_stops_its_runs_at_the_deadline_and_starts_no_further_wave(tmp_path):
    """Seen on the H200: at the deadline the runners were stopped but the wave loop went on, started the
    next seed's wave and kept the call past its limit, so nothing came back."""
    budget = 120
    out, took = dry_run(tmp_path, GPU_CHECK_BUDGET_S=str(budget), GPU_CHECK_STAGES="runs",
                        GPU_CHECK_RUN_SET="epochs=5000")
    summary = (out / "summary.txt").read_text()
    assert "deadline: stopping the runs" in summary and "4. runs: 0 finished" in summary, summary
    assert took < budget + 20, took
    runs_log = (out / "runs.log").read_text()
    assert runs_log.count("6 to run") <= 1  # one wave at most was started
    leftover = subprocess.run(["pgrep", "-f", "epochs=5000"], capture_output=True, text=True).stdout.split()
    assert not leftover, leftover
