"""scripts/gpu_check.sh's CPU dry run: every step of the GPU check runs at toy sizes and leaves the files
the GPU run brings back (so a lent GPU's minutes are not spent finding a typo)."""

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_gpu_check_dry_run_writes_every_output(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "SEBENCH_CACHE": str(tmp_path / "cache"),
           "GPU_CHECK_BUDGET_S": "900", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("SEBENCH_CIFAR10_JPEG", None)  # the dry run trains on the embedded subset
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p.name for p in out.iterdir()} == {"env.txt", "pytest_cuda.log", "bench.log", "runs.log",
                                               "runs.tar.gz", "summary.txt"}
    assert "torch" in (out / "env.txt").read_text()
    assert "skipped" in (out / "pytest_cuda.log").read_text()  # no CUDA here: the CUDA tests skip
    bench = (out / "bench.log").read_text()
    assert bench.count("sebench SE overhead (amp ") == 2 and bench.count("\nspeedup: ") == 2, bench
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
        summaries = [json.load(tar.extractfile(n)) for n in names if n.endswith("summary.json")]
    assert not any("/ckpt" in n for n in names)
    # seed 0 of the table's six rows, plus the second reading's Default and SE rows
    assert len(summaries) == 8 and all(s["status"] == "finished" for s in summaries)
    readings = [s for s in summaries if s["labels"]["method"] in ("Default", "SE module")]
    assert len({s["run_id"] for s in readings}) == 4
    summary = (out / "summary.txt").read_text()
    assert "4. runs: 8 finished" in summary and f"outputs in {out}" in summary
