"""The optional W&B mirror, offline: what it writes, that a failure only warns, that the API key never leaks,
and that `sebench wandb-sync` fails with one clear line when it cannot upload.

wandb 0.31 writes an offline run as <dir>/wandb/offline-run-<time>-<id>/run-<id>.wandb: a LevelDB-style log
of protobuf records (its files/ folder gets no config.yaml or wandb-summary.json offline).
`tracking.read_transaction_log` reads that log, so the tests check the config, history and summary W&B would
upload.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import yaml

from sebench import tracking
from sebench.cli import main

wandb = pytest.importorskip("wandb")

SENTINEL = "SENTINEL-api-key-0123456789abcdef0123456789"


def make_run(root: Path, *, leak: str | None = None) -> Path:
    d = root / "results" / "runs" / "tiny" / "abc123def456"
    d.mkdir(parents=True)
    config = {"run_id": "abc123def456", "experiment": "tiny", "profile": "smoke",
              "labels": {"model": "ResNet-20", "se": "SENet"},
              "model": {"name": "resnet20", "se": {"variant": "se", "reduction": 16}}, "epochs": 2, "seed": 1}
    (d / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    env = {"versions": {"torch": "2.14.1"}, "device": "cpu", "hostname": "vm"}
    if leak:
        env["execution"] = {"note": f"token={leak}"}  # a key that slipped into a record must still not leave
    (d / "env.json").write_text(json.dumps(env))
    (d / "metrics.jsonl").write_text("".join(
        json.dumps({"epoch": e, "test_top1_err": 50.0 - 10 * e, "train_loss": 2.0 / e, "time": 1e9}) + "\n"
        for e in (1, 2)))
    (d / "summary.json").write_text(json.dumps({
        "status": "finished", "run_id": "abc123def456", "experiment": "tiny", "profile": "smoke",
        "labels": config["labels"], "model": "resnet20", "se": "se r16 avg sigmoid standard",
        "dataset": "synthetic", "seed": 1, "epochs": 2, "batch_size": 128, "final_test_top1_err": 30.0,
        "params": 272095}))
    return d


def _records(path: Path) -> list:
    return tracking.read_transaction_log(path)


def _items(items) -> dict:
    return {i.key or ".".join(i.nested_key): json.loads(i.value_json) for i in items}


@pytest.fixture
def fresh(monkeypatch):
    """Reset the warn-once state, and make sure no real key or netrc is seen."""
    monkeypatch.setattr(tracking, "_warned", False)
    monkeypatch.setattr(tracking, "_disabled", None)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")


@pytest.fixture(scope="module")
def mirrored(tmp_path_factory):
    """One run and one report mirrored offline with a sentinel API key in the environment."""
    root = tmp_path_factory.mktemp("wb")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_API_KEY", SENTINEL)
    mp.delenv("WANDB_MODE", raising=False)
    mp.setattr(tracking, "_warned", False)
    mp.setattr(tracking, "_disabled", None)
    try:
        run = make_run(root)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # mirroring must not even warn when W&B works
            local = tracking.mirror_run(run, mode="offline")
            tables = root / "results" / "smoke" / "tables"
            tables.mkdir(parents=True)
            (tables / "tiny.csv").write_text("row,metric,mean\nResNet-20,top1_err,30.0\n")
            plots = root / "results" / "smoke" / "plots"
            plots.mkdir(parents=True)
            from PIL import Image
            Image.new("RGB", (32, 24), "white").save(plots / "tiny_curves.png")
            report = tracking.mirror_report("smoke", [tables / "tiny.csv"], [plots / "tiny_curves.png"],
                                            mode="offline")
    finally:
        mp.undo()
    return root, local, report


def test_offline_run_has_config_history_summary(mirrored):
    root, local, _ = mirrored
    assert local is not None and local.parent == root / "wandb"  # beside results/, not inside it
    assert local.name.startswith("offline-run-")
    log = next(local.glob("run-*.wandb"))
    assert log.stat().st_size > 0
    records = _records(log)
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == "abc123def456 model=ResNet-20, se=SENet seed 1"
    assert run.run_group == "tiny" and list(run.tags) == ["smoke", "model=ResNet-20", "se=SENet"]
    config = _items(run.config.update)
    assert config["model.se.reduction"] == 16 and config["env.versions.torch"] == "2.14.1"
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    assert [(h["_step"], h["test_top1_err"]) for h in history] == [(1, 40.0), (2, 30.0)]
    summary = {}
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update(_items(r.summary.update))
    assert summary["final_test_top1_err"] == 30.0 and summary["params"] == 272095


def test_report_run_holds_the_table(mirrored):
    root, _, report = mirrored
    assert report is not None and report.parent == root / "wandb"
    records = _records(next(report.glob("run-*.wandb")))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == "report-smoke"
    history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
    assert history[0]["tables/tiny._type"] == "table-file" and history[0]["tables/tiny.nrows"] == 1
    assert history[0]["plots/tiny_curves._type"] == "image-file"
    table = json.loads(next(report.glob("files/media/table/**/*.table.json")).read_text())
    assert table["columns"] == ["row", "metric", "mean"] and table["data"] == [["ResNet-20", "top1_err", "30.0"]]


def test_api_key_is_never_written(mirrored):
    """WANDB_API_KEY was the sentinel while mirroring: no file under results/ or wandb/ may hold it."""
    root, _, _ = mirrored
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".wandb" for p in files) and any(p.name == "summary.json" for p in files)
    assert [p for p in files if SENTINEL.encode() in p.read_bytes()] == []


def test_a_key_inside_a_record_is_redacted(fresh, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", SENTINEL)
    run = make_run(tmp_path, leak=SENTINEL)
    local = tracking.mirror_run(run, mode="offline", dir=tmp_path / "elsewhere")
    assert local is not None and local.parent == tmp_path / "elsewhere" / "wandb"
    written = [p for p in (tmp_path / "elsewhere").rglob("*") if p.is_file()]
    assert written and [p for p in written if SENTINEL.encode() in p.read_bytes()] == []
    assert b"<redacted>" in next(local.glob("run-*.wandb")).read_bytes()


def test_failure_warns_once_and_never_raises(fresh, tmp_path, monkeypatch):
    run = make_run(tmp_path)
    monkeypatch.setitem(__import__("sys").modules, "wandb", None)  # import wandb -> ImportError
    with pytest.warns(RuntimeWarning, match="wandb cannot be imported") as caught:
        assert tracking.mirror_run(run) is None
        assert tracking.mirror_run(run) is None
        assert tracking.mirror_report("smoke", [], []) is None
    assert len(caught) == 1


def test_init_failure_warns_once(fresh, tmp_path, monkeypatch):
    run = make_run(tmp_path)

    def refuse(**kwargs):
        raise RuntimeError("no route to host")

    monkeypatch.setattr(wandb, "init", refuse)
    with pytest.warns(RuntimeWarning, match="no route to host") as caught:
        assert tracking.mirror_run(run, mode="offline") is None
        assert tracking.mirror_run(run, mode="offline") is None
    assert len(caught) == 1


def test_mode_is_offline_without_a_key(fresh, tmp_path, monkeypatch):
    assert tracking.resolve_mode() == "offline"
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert tracking.resolve_mode() == "online"
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")
    monkeypatch.setenv("WANDB_API_KEY", SENTINEL)
    assert tracking.resolve_mode() == "online" and tracking.resolve_mode("offline") == "offline"


def _fake_offline_run(folder: Path) -> Path:
    d = folder / "wandb" / "offline-run-20260101_000000-abc"
    d.mkdir(parents=True)
    (d / "run-abc.wandb").write_bytes(b":W&B\x00\x00\x00")
    return d


@pytest.mark.parametrize("setup, fragment", [
    ("no_runs", "no offline W&B runs found"),
    ("no_key", "no W&B API key"),
    ("no_network", "cannot reach the W&B server"),
])
def test_wandb_sync_fails_with_one_clear_line(fresh, tmp_path, monkeypatch, capsys, setup, fragment):
    if setup != "no_runs":
        _fake_offline_run(tmp_path)
    if setup == "no_network":
        monkeypatch.setenv("WANDB_API_KEY", SENTINEL)
        monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # discard port: nothing listens
    assert main(["wandb-sync", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and err.count("\n") == 1
    assert SENTINEL not in err


def test_run_with_wandb_mirrors_each_run_offline(tmp_path):
    """`sebench run --wandb`: every run that ends becomes an offline W&B run grouped by experiment, tagged
    with the profile and its sweep labels, holding its per-epoch metrics; the sweep itself still succeeds."""
    import subprocess

    from test_faults import PY, env, write_spec

    folder = write_spec(tmp_path, [0, 1])
    proc = subprocess.run([PY, "-m", "sebench", "run", "tiny.yaml", "--profile", "smoke", "--results", "results",
                           "--device", "cpu", "--wandb", "--no-progress"], cwd=folder,
                          env=env(WANDB_MODE="offline", NETRC="/nonexistent/netrc", WANDB_API_KEY=""),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    local = sorted((folder / "wandb").glob("offline-run-*"))
    assert len(local) == 2
    finished = {d.name for d in (folder / "results" / "runs" / "tiny").iterdir()}
    for run_folder in local:
        records = _records(next(run_folder.glob("run-*.wandb")))
        run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
        assert run.run_group == "tiny" and run.tags[0] == "smoke"
        assert run.display_name.split()[0] in finished
        history = [_items(r.history.item) for r in records if r.WhichOneof("record_type") == "history"]
        assert history and all("test_top1_err" in h for h in history)
