"""The optional W&B mirror, offline: what it writes, that a failure only warns, that the API key never leaks,
that `sebench wandb-sync` fails with one clear line when it cannot upload, and the live side of a sweep: each
epoch in the offline files while the run trains, a resume continuing the same W&B run, the excitation
histograms, a complete table's paired deltas.

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
from sebench.store import RunDir

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
    monkeypatch.setattr(tracking.core, "_warned", False)
    monkeypatch.setattr(tracking.core, "_disabled", None)
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
    mp.setattr(tracking.core, "_warned", False)
    mp.setattr(tracking.core, "_disabled", None)
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


def _history(folder: Path) -> list[dict]:
    logs = list(folder.glob("run-*.wandb"))  # none yet in a folder W&B is still making
    return [_items(r.history.item) for r in (_records(logs[0]) if logs else [])
            if r.WhichOneof("record_type") == "history"]


def _summary(folder: Path) -> dict:
    out = {}
    for r in _records(next(folder.glob("run-*.wandb"))):
        if r.WhichOneof("record_type") == "summary":
            out.update(_items(r.summary.update))
    return out


def _run_record(folder: Path):
    return next(r.run for r in _records(next(folder.glob("run-*.wandb"))) if r.WhichOneof("record_type") == "run")


def _folders(root: Path, run_id: str) -> list[Path]:
    """The offline folders of one W&B run id, oldest first (W&B names them by start time)."""
    return sorted(p for p in (root / "wandb").glob(f"offline-run-*-{run_id}*") if p.is_dir())


def write_analysis(run: Path) -> None:
    """What `sebench analyze` leaves: per (block, class, channel) mean gates; 'all' is every class together."""
    rows = ["block,depth_index,class,channel,mean,std,count"]
    for depth, (block, means) in enumerate({"SE_1_1": [0.2, 0.4], "SE_1_2": [0.5, 0.6],
                                           "SE_2_1": [0.9, 0.95, 0.99]}.items()):
        for cls in ("airplane", "all"):
            rows += [f"{block},{depth},{cls},{c},{m},0.01,10" for c, m in enumerate(means)]
    (run / "analysis").mkdir()
    (run / "analysis" / "excitation_stats.csv").write_text("\n".join(rows) + "\n")


def test_histograms_per_stage_and_a_later_mirror_adds_no_epoch_twice(fresh, tmp_path):
    """An analysed SE run gets one histogram per stage (the channels' mean gates) after its last epoch; a later
    mirror of the same run continues its W&B run (same id, a new offline folder) without logging anything
    W&B already has."""
    run = make_run(tmp_path)
    first = tracking.mirror_run(run, mode="offline")
    write_analysis(run)
    second = tracking.mirror_run(run, mode="offline")
    third = tracking.mirror_run(run, mode="offline")
    assert _folders(tmp_path, "abc123def456") == [first, second, third]
    assert {_run_record(f).run_id for f in (first, second, third)} == {"abc123def456"}
    assert [h["_step"] for h in _history(first)] == [1, 2]
    (hist,) = _history(second)  # the epochs were there already; the histograms were not
    assert hist["_step"] == 3 and hist["epoch"] == 2
    assert hist["excitation/stage_1._type"] == "histogram" and sum(hist["excitation/stage_1.values"]) == 4
    assert sum(hist["excitation/stage_2.values"]) == 3 and "excitation/stage_3._type" not in hist
    assert _history(third) == [] and _summary(third)["final_test_top1_err"] == 30.0


def spec_text(epochs: int = 3) -> str:
    """test_faults' tiny spec with two arms (plain, the baseline, and SE) and one seed."""
    from test_faults import SPEC

    return SPEC.replace("SEEDS", "[0]").replace("epochs: 3", f"epochs: {epochs}").replace(
        "      - {label: LABEL, baseline: true, set: {model.se: SE}}",
        "      - {label: plain, baseline: true, set: {model.se: null}}\n"
        "      - {label: SE, set: {model.se: {reduction: 4}}}")


def test_a_sweep_logs_each_epoch_while_it_runs_and_a_resume_continues_the_run(tmp_path):
    """`sebench run --wandb` in offline mode: the sweep's parent logs each epoch of a run into its offline
    W&B run while the run still trains; the sweep is killed, and the next sweep resumes the run into a new
    offline folder with the same W&B id, holding only the epochs after the first's. Then the summary, and the
    table's paired deltas once both arms have finished."""
    import signal
    import subprocess
    import time

    from test_faults import PY, WRAPPER, env

    (tmp_path / "tiny.yaml").write_text(spec_text())
    (tmp_path / "wrapper.py").write_text(WRAPPER)
    wandb_env = dict(WANDB_MODE="offline", NETRC="/nonexistent/netrc", WANDB_API_KEY="")
    argv = ["run", "tiny.yaml", "--profile", "smoke", "--results", "results", "--device", "cpu", "--wandb"]
    marker = tmp_path / "paused"
    with open(tmp_path / "paused.err", "w") as err:  # a file: an unread pipe could stall the sweep
        proc = subprocess.Popen([PY, "wrapper.py", *argv], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=err,
                                env=env(SB_FAULT=f"pause:1:3:1:{marker}", **wandb_env))
    try:
        deadline = time.time() + 300
        live = []
        while [h.get("_step") for h in live] != [1, 2]:  # epochs 1 and 2 done, the run stopped inside epoch 3
            assert proc.poll() is None, (tmp_path / "paused.err").read_text()
            assert time.time() < deadline, f"no live history: {live}"
            time.sleep(0.5)
            folders = sorted((tmp_path / "wandb").glob("offline-run-*"))
            live = _history(folders[0]) if folders and marker.exists() else []
        assert live[1]["test_top1_err"] >= 0 and {"train_loss", "test_loss", "test_top5_err", "lr", "train_img_s",
                                                  "epoch_s", "epoch"} <= set(live[1])
    finally:
        proc.send_signal(signal.SIGKILL)  # a crash: nothing of the sweep gets to close its W&B run
        proc.wait()
    done = subprocess.run([PY, "-m", "sebench", *argv, "--no-progress"], cwd=tmp_path, env=env(**wandb_env),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "W&B mirroring skipped" not in done.stderr
    ids = {p.name: json.loads((p / "summary.json").read_text()) for p in (tmp_path / "results/runs/tiny").iterdir()}
    resumed = next(rid for rid, s in ids.items() if s["labels"]["se"] == "plain")
    other = next(rid for rid in ids if rid != resumed)
    killed, continued = _folders(tmp_path, resumed)
    assert _run_record(killed).run_id == _run_record(continued).run_id == resumed
    assert [h["_step"] for h in _history(killed)] == [1, 2]
    assert [(h["_step"], h["epoch"]) for h in _history(continued)] == [(3, 3)]
    assert _summary(continued)["final_test_top1_err"] == ids[resumed]["final_test_top1_err"]
    (whole,) = _folders(tmp_path, other)
    assert [h["_step"] for h in _history(whole)] == [1, 2, 3]
    run = _run_record(whole)
    assert run.display_name == f"{other} se=SE seed 0" and run.run_group == "tiny"
    assert list(run.tags) == ["smoke", "se=SE"]
    config = _items(run.config.update)
    assert config["arm"] == "se=SE" and config["arm_index"] == 1 and config["model.se.reduction"] == 4
    assert _summary(whole)["final_test_top1_acc"] == pytest.approx(100 - ids[other]["final_test_top1_err"])
    (table,) = _folders(tmp_path, "table-tiny-smoke")
    delta = _summary(table)["delta/SE/top1_err"]
    assert delta["n"] == 1 and delta["baseline"] == "se=plain"
    assert delta["mean"] == pytest.approx(ids[other]["final_test_top1_err"] - ids[resumed]["final_test_top1_err"])


def _run_folder(root: Path, lock_host: str, records: list[dict]) -> Path:
    run = make_run(root)
    (run / "summary.json").unlink()  # still training
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return run


def test_live_mirror_skips_other_runners_runs_and_a_discarded_attempt(fresh, tmp_path):
    """A run whose lock another runner took before this sweep started is not logged live (that runner's to
    mirror); a run that starts from epoch 1 does not log the epochs its discarded attempt left behind."""
    import socket
    import time

    run = _run_folder(tmp_path, "x", [{"epoch": 1, "test_top1_err": 99.0, "time": 1.0}])  # an old attempt's
    lock = RunDir(run).lock  # the lock a run's trainer holds (runner.locks)
    lock.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "since": time.time() - 60}))
    mirror = tracking.LiveMirror(mode="offline", poll=0.1)
    mirror.on_start(run)
    time.sleep(1.0)
    assert not (tmp_path / "wandb").exists()  # another runner's lock: nothing opened
    lock.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "since": time.time() + 1}))
    with open(run / "metrics.jsonl", "w") as f:  # the fresh attempt rewrites the epoch log as it trains
        f.write(json.dumps({"epoch": 1, "test_top1_err": 60.0, "time": time.time() + 1}) + "\n")
    deadline = time.time() + 60
    while not (folders := _folders(tmp_path, "abc123def456")) or not _history(folders[0]):
        assert time.time() < deadline
        time.sleep(0.2)
    (run / "summary.json").write_text(json.dumps({
        "status": "finished", "run_id": "abc123def456", "experiment": "x", "profile": "smoke", "model": "resnet20",
        "se": "none", "dataset": "synthetic", "seed": 0, "epochs": 1, "batch_size": 128,
        "final_test_top1_err": 60.0}))
    mirror.on_end(run, "finished")
    mirror.close()
    (folder,) = _folders(tmp_path, "abc123def456")
    assert [(h["_step"], h["test_top1_err"]) for h in _history(folder)] == [(1, 60.0)]
    assert _summary(folder)["final_test_top1_err"] == 60.0


def test_without_wandb_nothing_happens(fresh, tmp_path, monkeypatch):
    """Disabled (no --wandb), a LiveMirror starts no thread and imports nothing; with W&B unimportable, a
    sweep's calls warn once and return."""
    import sys

    run = make_run(tmp_path)
    off = tracking.LiveMirror(enabled=False)
    off.on_start(run)
    off.on_end(run, "finished")
    off.close()
    assert off._thread is None
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.warns(RuntimeWarning, match="wandb cannot be imported") as caught:
        with tracking.LiveMirror(poll=0.05) as mirror:
            mirror.on_start(run)
            mirror.on_end(run, "finished")
    assert len(caught) == 1 and not (tmp_path / "wandb").exists()


def test_analyze_with_wandb_mirrors_only_the_runs_own_analysis(tmp_path, capsys):
    """`sebench analyze RUN --wandb` continues the run's W&B run with the histograms of RUN/analysis; pointed at
    another folder it stops with one line before analysing anything."""
    run = make_run(tmp_path)
    assert main(["analyze", str(run), "--out", str(tmp_path / "elsewhere"), "--wandb"]) == 2
    err = capsys.readouterr().err
    assert "--wandb logs the histograms of RUN_DIR/analysis" in err and err.count("\n") == 1
    assert not (tmp_path / "elsewhere").exists()


def test_a_tables_deltas_against_its_second_baseline_reach_wandb(fresh, tmp_path):
    """The W&B table run holds both delta families: delta/<row>/<metric> against the baseline and
    delta_second/<row>/<metric> against the second baseline (ablation_stages: one stage vs all stages)."""
    from test_report import NOISE, TINY_STAGES, make_store

    all_ = {0: 40.0, 1: 41.0, 2: 39.5, 3: 40.5}
    errors = {("no SE",): {s: v + 0.5 for s, v in all_.items()},
              ("S1",): {s: v + 1.0 + NOISE[s] for s, v in all_.items()},
              ("S2",): {s: v + NOISE[s + 1] for s, v in all_.items()}, ("All",): all_}
    spec, _, results = make_store(tmp_path, TINY_STAGES, "tiny_stages", errors)
    assert tracking.mirror_table(spec, "quick", results, mode="offline", dir=tmp_path) is not None
    (table,) = _folders(tmp_path, "table-tiny_stages-quick")
    summary = _summary(table)
    first, second = summary["delta/S1/top1_err"], summary["delta_second/S1/top1_err"]
    assert first["baseline"] == "stage=no SE" and second["baseline"] == "stage=All"
    assert second["n"] == 4 and second["verdict"] == "worse"
    assert second["mean"] == pytest.approx(1.0 + sum(NOISE[:4]) / 4)
    assert "delta_second/All/top1_err" not in summary and "delta_second/no SE/top1_err" not in summary
