"""fit end to end on the synthetic data: records, failure, exact resume after SIGKILL, finished runs.

The 3-layer CNN is used because it is small and has dropout, so resume must restore the global RNG too.
"""

import importlib
import json
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from childenv import child_env
import sebench.engine.checkpoint as checkpoint
from sebench.engine import RunFailed, evaluate, fit, train_epoch
from sebench.errors import UserError
from sebench.spec import DataCfg, ExecutionCfg, ModelCfg, OptimCfg, RunConfig
from sebench.store import read_jsonl

# The package exports the function `fit`, which hides the submodule of the same name from attribute access.
fit_module = importlib.import_module("sebench.engine.fit")
builders = importlib.import_module("sebench.engine.builders")
EPOCHS = 4
METRICS = ("train_loss", "train_top1_err", "test_loss", "test_top1_err", "test_top5_err", "lr")
FINAL = ("final_test_top1_err", "final_test_top5_err", "final_test_loss", "final_train_loss")


def make_cfg(**changes) -> RunConfig:
    base = dict(experiment="engine-test", profile="test", model=ModelCfg(name="cnn3"),
                data=DataCfg(name="synthetic", train_subset=64, test_subset=32),
                optim=OptimCfg(lr=0.05, schedule="multistep"), epochs=EPOCHS, batch_size=16,
                eval_batch_size=32, seed=3,
                execution=ExecutionCfg(device="cpu", threads=1, progress=False))
    return RunConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: (config, run dir, summary)."""
    cfg = make_cfg()
    run = tmp_path_factory.mktemp("reference")
    return cfg, run, fit(cfg, run)


def curve(run: Path) -> list[tuple]:
    """Every epoch's numbers except timings, which legitimately differ."""
    return [(r["epoch"], *(r[k] for k in METRICS)) for r in read_jsonl(run / "metrics.jsonl")]


def test_fit_writes_the_run_records(reference):
    cfg, run, summary = reference
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["run_id"] == cfg.run_id and config["model"]["name"] == "cnn3"
    metrics = read_jsonl(run / "metrics.jsonl")
    assert [m["epoch"] for m in metrics] == list(range(1, EPOCHS + 1))
    assert set(metrics[0]) == {"epoch", *METRICS, "train_img_s", "epoch_s", "time"}
    assert [m["lr"] for m in metrics] == pytest.approx([0.05, 0.05, 0.005, 0.0005])  # /10 at 50%, 75%
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == summary.to_json() and summary.status == "finished" and summary.run_id == cfg.run_id
    last = metrics[-1]  # final epoch, never the best one
    assert summary.final_test_top1_err == last["test_top1_err"]
    assert summary.final_test_top5_err == last["test_top5_err"]
    assert summary.final_train_loss == last["train_loss"]
    assert summary.params == sum(p.numel() for p in builders.build_model("cnn3", 10).parameters())
    assert summary.flops > 0 and summary.train_img_s > 0 and summary.batch_size == 16
    assert summary.dataset == "synthetic [train 64, test 32]" and summary.se == "none"
    env = json.loads((run / "env.json").read_text())
    assert env["threads"] == 1 and env["data"] == summary.dataset and env["execution"]["threads"] == 1
    assert set(env["versions"]) >= {"torch", "torchvision", "timm", "numpy"} and "commit" in env["git"]
    assert sorted(p.name for p in (run / "ckpt").iterdir()) == ["last.pt", "prev.pt"]
    last_ckpt = torch.load(run / "ckpt" / "last.pt", weights_only=True)
    prev_ckpt = torch.load(run / "ckpt" / "prev.pt", weights_only=True)
    assert (last_ckpt["epoch"], prev_ckpt["epoch"]) == (EPOCHS, EPOCHS - 1)
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")]


def test_finished_run_is_returned_not_retrained(reference, monkeypatch):
    cfg, run, summary = reference

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(fit_module, "build_loaders", no_training)
    assert fit(cfg, run) == summary


# The child process trains until a test hook on save_checkpoint kills it with SIGKILL right after the
# checkpoint of epoch `kill_at` (0: never).
CHILD = """
import os, signal, sys
import sebench.engine.checkpoint as checkpoint
from sebench.engine import fit
from sebench.spec import RunConfig

cfg = RunConfig.model_validate_json(sys.argv[1])
run_dir, kill_at = sys.argv[2], int(sys.argv[3])
save = checkpoint.save_checkpoint

def save_then_maybe_die(ckpt_dir, state):
    path = save(ckpt_dir, state)
    if state["epoch"] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return path

checkpoint.save_checkpoint = save_then_maybe_die
fit(cfg, run_dir)
"""


def run_child(cfg: RunConfig, run: Path, kill_at: int = 0) -> int:
    proc = subprocess.run([sys.executable, "-c", CHILD, cfg.model_dump_json(), str(run), str(kill_at)],
                          env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode in (0, -signal.SIGKILL), proc.stderr
    return proc.returncode


def test_sigkill_then_resume_is_bitwise_equal(reference, tmp_path):
    cfg, ref_run, ref_summary = reference
    assert run_child(cfg, tmp_path, kill_at=2) == -signal.SIGKILL
    assert not (tmp_path / "summary.json").exists()
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 2

    assert run_child(cfg, tmp_path) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {k: summary[k] for k in FINAL} == {k: getattr(ref_summary, k) for k in FINAL}  # bitwise: floats compared ==
    assert curve(tmp_path) == curve(ref_run)  # every epoch equal, none duplicated or missing
    env = json.loads((tmp_path / "env.json").read_text())
    assert [r["from_epoch"] for r in env["resumes"]] == [2]


class Interrupt(Exception):
    pass


def test_kill_before_checkpoint_and_torn_last_pt_fall_back_to_prev(reference, tmp_path, monkeypatch):
    """Stopped after epoch 3's metrics line but before its checkpoint (last.pt: epoch 2, prev.pt: epoch 1),
    then last.pt torn: the resume starts from prev.pt and drops the log lines of epochs 2 and 3."""
    cfg, ref_run, ref_summary = reference
    save = checkpoint.save_checkpoint

    def stop_at_3(ckpt_dir, state):
        if state["epoch"] == 3:
            raise Interrupt
        return save(ckpt_dir, state)

    monkeypatch.setattr(checkpoint, "save_checkpoint", stop_at_3)
    with pytest.raises(Interrupt):
        fit(cfg, tmp_path)
    monkeypatch.setattr(checkpoint, "save_checkpoint", save)
    assert len(read_jsonl(tmp_path / "metrics.jsonl")) == 3
    last = tmp_path / "ckpt" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a torn write
    orphan = last.with_name(".last.pt.1234.abcd.tmp")  # what a kill during torch.save leaves
    orphan.write_bytes(b"partial")
    with pytest.warns(RuntimeWarning) as caught:
        summary = fit(cfg, tmp_path)
    messages = " | ".join(str(w.message) for w in caught)
    assert "last.pt is unreadable" in messages and "prev.pt (epoch 1)" in messages
    assert not orphan.exists()
    assert {k: getattr(summary, k) for k in FINAL} == {k: getattr(ref_summary, k) for k in FINAL}
    assert curve(tmp_path) == curve(ref_run)
    env = json.loads((tmp_path / "env.json").read_text())
    assert [r["from_epoch"] for r in env["resumes"]] == [1]


def test_checkpoint_of_another_run_is_a_user_error(reference, tmp_path):
    _, ref_run, _ = reference
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "last.pt").write_bytes((ref_run / "ckpt" / "last.pt").read_bytes())
    with pytest.raises(UserError, match="belongs to run"):
        fit(make_cfg(seed=4), tmp_path)


class NaNNet(nn.Module):
    input_size = (3, 32, 32)

    def __init__(self, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")


def test_nan_loss_fails_the_run_with_epoch_and_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(builders, "build_model", lambda name, num_classes, **kw: NaNNet(num_classes))
    cfg = make_cfg(epochs=2)
    with pytest.raises(RunFailed, match="non-finite training loss") as info:
        fit(cfg, tmp_path)
    assert info.value.epoch == 1
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["epoch"] == 1 and "non-finite" in summary["reason"]
    assert summary["run_id"] == cfg.run_id
    assert read_jsonl(tmp_path / "metrics.jsonl") == []


def test_train_epoch_and_evaluate_take_any_batches():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    data = [(torch.randn(4, 3, 2, 2), torch.randint(0, 3, (4,))) for _ in range(3)]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    stats = train_epoch(net, iter(data), optimizer, loss_fn=nn.CrossEntropyLoss())  # no len(), no scheduler
    assert stats["n"] == 12 and stats["steps"] == 3 and stats["lr"] == 0.1 and stats["img_s"] > 0
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(10, 3, 2, 2),
                                                                        torch.randint(0, 3, (10,))),
                                         batch_size=4)
    result = evaluate(net, loader, channels_last=True)
    assert result["n"] == 10 and result["top5_err"] == 0.0  # 3 classes: every label is in the top 3


def test_evaluate_errors_hand_computed():
    logits = torch.tensor([[9.0, 1, 2, 3, 4, 5],    # label 0 ranked 1st: top-1 and top-5 hit
                           [9.0, 8, 7, 6, 5, 4],    # label 5 ranked 6th: both miss
                           [1.0, 2, 3, 9, 8, 7]])   # label 5 ranked 3rd: top-5 hit only
    labels = torch.tensor([0, 5, 5])
    result = evaluate(nn.Identity(), [(logits[:2], labels[:2]), (logits[2:], labels[2:])])
    assert result["top1_err"] == pytest.approx(200 / 3) and result["top5_err"] == pytest.approx(100 / 3)
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(logits, labels).item())


def test_bf16_autocast_on_a_cpu_with_native_bf16_is_honoured_and_recorded(tmp_path):
    flag = fit_module.cpu_bf16_flag()
    if flag is None:
        pytest.skip("this CPU has no native bf16 (avx512_bf16 / amx_bf16): bf16 runs are refused here")
    cfg = make_cfg(amp="bf16", epochs=1)
    assert cfg.run_id != make_cfg(epochs=1).run_id  # the autocast dtype is part of what a run is
    summary = fit(cfg, tmp_path / "run")
    assert summary.status == "finished" and summary.amp == "bfloat16"
    env = json.loads((tmp_path / "run" / "env.json").read_text())
    assert env["amp"] == {"requested": "bf16", "used": "bfloat16", "cpu_flag": flag}


def test_bf16_without_native_support_and_fp16_on_a_cpu_are_refused(tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    assert builders.resolve_amp("off", cpu) is None
    with pytest.raises(UserError, match="fp16"):
        builders.resolve_amp("fp16", cpu)
    monkeypatch.setattr(builders, "cpu_bf16_flag", lambda: None)
    with pytest.raises(UserError, match="emulated") as err:
        fit(make_cfg(amp="bf16", epochs=1), tmp_path / "run")
    assert err.value.field == "amp"
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_skipping_the_nan_fill_of_new_memory_changes_no_number(tmp_path, monkeypatch):
    """fit turns off deterministic mode's NaN fill of every new tensor (about 12% of a CPU ResNet-20 step):
    a run's numbers and final weights must be the same bit for bit as with the fill, for the blocks the
    CIFAR sweeps use (conv, BN, residual, SE), and the caller's setting comes back afterwards."""
    cfg = make_cfg(model=ModelCfg(name="resnet20", se={"variant": "se", "reduction": 4}), epochs=2)
    original, inside = fit_module.process_settings, []

    @contextmanager
    def with_fill(*args, **kwargs):
        with original(*args, **kwargs) as threads:
            inside.append(torch.utils.deterministic.fill_uninitialized_memory)
            torch.utils.deterministic.fill_uninitialized_memory = True
            yield threads

    assert torch.utils.deterministic.fill_uninitialized_memory is True  # torch's default
    fast = fit(cfg, tmp_path / "fast")
    assert torch.utils.deterministic.fill_uninitialized_memory is True  # restored
    monkeypatch.setattr(fit_module, "process_settings", with_fill)
    filled = fit(cfg, tmp_path / "filled")
    assert inside == [False]
    assert curve(tmp_path / "fast") == curve(tmp_path / "filled")
    assert all(getattr(fast, k) == getattr(filled, k) for k in FINAL)
    weights = [torch.load(tmp_path / run / "ckpt" / "last.pt", weights_only=False)["model"]
               for run in ("fast", "filled")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
