"""`sebench wandb-dashboard`: the workspace definition built with wandb-workspaces, its panels over the keys the
mirror logs, and --save through the library's own upload with only the network call (wandb.Api's GraphQL
transport) replaced: there is no W&B server here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sebench.cli import main

pytest.importorskip("wandb_workspaces")
wandb = pytest.importorskip("wandb")

from sebench.tracking import dashboard  # noqa: E402


def _panels(definition: dict) -> dict[str, list[dict]]:
    return {s["name"]: s["panels"] for s in definition["spec"]["section"]["panelBankConfig"]["sections"]}


def _store(root: Path) -> Path:
    """A results root with one analysed SE run of experiment `tiny` (SE blocks in stages 1 and 3)."""
    analysis = root / "results" / "runs" / "tiny" / "abc123def456" / "analysis"
    analysis.mkdir(parents=True)
    (analysis / "excitation_summary.csv").write_text(
        "block,depth_index,channels\nSE_1_1,0,16\nSE_1_2,1,16\nSE_3_1,2,64\n")
    return root / "results"


def test_the_workspace_holds_the_panels_researchers_build_by_hand(tmp_path):
    results = _store(tmp_path)
    assert dashboard.excitation_stages(results) == dashboard.excitation_stages(results, "tiny") == [1, 3]
    assert dashboard.excitation_stages(results, "other") == []
    definition = dashboard.definition(dashboard.build_workspace("proj", "team", "tiny", [1, 3]))
    assert (definition["entity"], definition["project"], definition["name"]) == ("team", "proj", "sebench: tiny")
    sections = _panels(definition)
    curves = next(p for name, p in sections.items() if name.startswith("Learning curves per arm"))
    assert [c["config"]["metrics"] for c in curves] == [["test_top1_err"], ["test_top5_err"], ["test_loss"],
                                                         ["train_loss"]]
    assert {(c["viewType"], c["config"]["xAxis"], c["config"]["groupBy"], c["config"]["groupArea"])
            for c in curves} == {("Run History Line Plot", "epoch", "arm.value", "minmax")}
    final = next(p for name, p in sections.items() if name.startswith("Final error per arm"))
    assert (final[0]["viewType"], final[0]["config"]["xAxis"], final[0]["config"]["yAxis"]) == (
        "Scatter Plot", "config:arm_index.value", "summary:final_test_top1_err")
    assert final[1]["viewType"] == "Bar Chart" and final[1]["config"]["groupBy"] == "arm.value"
    speed = sections["Accuracy vs throughput"]
    assert [(p["config"]["xAxis"], p["config"]["yAxis"]) for p in speed] == [
        ("summary:train_img_s", "summary:final_test_top1_acc"), ("summary:infer_img_s", "summary:final_test_top1_acc")]
    hist = next(p for name, p in sections.items() if name.startswith("Excitation histograms per stage"))
    assert [p["config"]["metrics"] for p in hist] == [["excitation/stage_1"], ["excitation/stage_3"]]
    deltas = next(p for name, p in sections.items() if name.startswith("Paired deltas"))
    assert '"val": "deltas"' in json.dumps(deltas)
    settings = definition["spec"]["section"]["settings"]
    assert settings["xAxis"] == "epoch" and settings["maxRuns"] == 100
    assert '"tiny"' in json.dumps(definition["spec"]["section"]["runSets"][0]["filters"])  # group = experiment


def test_without_analysed_runs_one_panel_takes_every_stage():
    definition = dashboard.definition(dashboard.build_workspace("proj"))
    assert "tiny" not in json.dumps(definition["spec"]["section"]["runSets"][0]["filters"])  # every run
    sections = _panels(definition)
    (hist,) = next(p for name, p in sections.items() if name.startswith("Excitation histograms"))
    assert hist["config"]["metricRegex"] == "excitation/stage_.*"


class FakeTransport:
    """wandb.Api's GraphQL transport (`_service_api`), the one network boundary of wandb-workspaces' upload."""

    calls: list = []
    fail: Exception | None = None
    app_url = "https://wandb.example"

    def execute_graphql(self, query, variables=None):
        if self.fail is not None:
            raise self.fail
        FakeTransport.calls.append((query, variables))
        return {"upsertView": {"view": {"name": variables["name"], "id": "VIEW1"}, "inserted": True}}


class FakeApi:
    def __init__(self, *args, **kwargs):
        self._service_api = FakeTransport()


@pytest.fixture
def boundary(monkeypatch):
    monkeypatch.setattr(wandb, "Api", FakeApi)
    monkeypatch.setattr(FakeTransport, "calls", [])
    monkeypatch.setattr(FakeTransport, "fail", None)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.delenv("WANDB_ENTITY", raising=False)
    return FakeTransport


def test_save_uploads_the_definition_it_writes(tmp_path, boundary, capsys):
    results = _store(tmp_path)
    out = tmp_path / "dash.json"
    assert main(["wandb-dashboard", "--project", "proj", "--entity", "team", "--experiment", "tiny",
                 "--results", str(results), "--folder", str(tmp_path), "--out", str(out), "--save"]) == 0
    printed = capsys.readouterr().out
    written = json.loads(out.read_text())
    ((query, variables),) = boundary.calls
    assert "upsertView" in query and (variables["entityName"], variables["projectName"]) == ("team", "proj")
    assert variables["displayName"] == "sebench: tiny" and variables["type"] == "project-view"
    assert json.loads(variables["spec"]) == written["spec"]
    assert f"definition: {out}" in printed
    assert "saved: https://wandb.example/team/proj?nw=" in printed


def test_without_save_nothing_is_uploaded_and_the_default_file_is_beside_results(tmp_path, boundary, capsys):
    results = _store(tmp_path)
    assert main(["wandb-dashboard", "--results", str(results), "--folder", str(tmp_path)]) == 0
    out = tmp_path / "wandb" / "dashboard-sebench.json"
    assert json.loads(out.read_text())["entity"] is None and boundary.calls == []
    assert f"definition: {out}" in capsys.readouterr().out
    assert main(["wandb-dashboard", "--results", str(results), "--folder", str(tmp_path), "--out", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["name"] == "sebench"


@pytest.mark.parametrize("argv, fragment", [
    (["--experiment", "nope"], "no experiment 'nope'"),
    (["--save"], "needs the W&B entity"),
    (["--save", "--entity", "team", "NO_KEY"], "no W&B API key"),
    (["--save", "--entity", "team", "REFUSED"], "W&B did not save the workspace (ConnectionError: no route"),
])
def test_mistakes_end_in_one_line(tmp_path, boundary, monkeypatch, capsys, argv, fragment):
    if "NO_KEY" in argv:
        monkeypatch.delenv("WANDB_API_KEY")
        monkeypatch.setenv("NETRC", "/nonexistent/netrc")
    if "REFUSED" in argv:
        monkeypatch.setattr(FakeTransport, "fail", ConnectionError("no route to host"))
    argv = [a for a in argv if a not in ("NO_KEY", "REFUSED")]
    out = tmp_path / "dash.json"
    assert main(["wandb-dashboard", "--results", str(_store(tmp_path)), "--folder", str(tmp_path),
                 "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and "Traceback" not in err and err.count("\n") == 1
    assert out.exists() == ("did not save" in fragment)  # a user's mistake writes nothing; W&B's refusal comes last
