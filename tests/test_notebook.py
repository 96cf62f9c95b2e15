"""notebooks/excitation_distributions.ipynb runs headless (nbclient, the venv's python3 kernel) against a
tiny SE run trained here, which it finds itself (its default-run rule over a results root), without error
cells, and shows the four figures and the computed verdicts."""

from pathlib import Path

import pytest

from sebench.engine import fit
from sebench.spec import BenchmarkCfg, DataCfg, ExecutionCfg, ModelCfg, RunConfig

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

pytestmark = pytest.mark.integration
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "excitation_distributions.ipynb"


def test_notebook_executes_against_a_tiny_run(tmp_path, monkeypatch):
    cfg = RunConfig(experiment="tiny", profile="test", model=ModelCfg(name="resnet20", se="se"),
                    data=DataCfg(name="cifar10-embedded", train_subset=40, test_subset=100), epochs=1,
                    batch_size=20, eval_batch_size=50, benchmark=BenchmarkCfg(batch_size=2, warmup=0, iters=1),
                    execution=ExecutionCfg(device="cpu", threads=1, progress=False))
    results = tmp_path / "results"
    run = results / "runs" / cfg.experiment / cfg.run_id
    fit(cfg, run)
    # The kernel inherits this process's environment: the notebook picks the run from this results root.
    monkeypatch.setenv("SEBENCH_ANALYSIS_RESULTS", str(results))
    monkeypatch.setenv("SEBENCH_ANALYSIS_PROFILES", "full40;test")
    monkeypatch.setenv("SEBENCH_ANALYSIS_DATASET", "CIFAR-10")
    for name in ("SEBENCH_ANALYSIS_RUN", "SEBENCH_ANALYSIS_REDO"):
        monkeypatch.delenv(name, raising=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 4
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert f"run: {run.resolve()}" in printed
    text = "\n".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert cfg.run_id in text and "CIFAR-10 (JPEG q75 mirror, embedded subset)" in text
    for claim in ("**1. Class-agnostic early", "**2. Near saturation", "**3. Similar pattern"):
        assert claim in text
    assert (run / "analysis" / "excitation_stats.csv").stat().st_size > 0
