"""`sebench wandb-dashboard`: the W&B workspace researchers open instead of building panels by hand, defined
here with wandb-workspaces (`pip install sebench[wandb]`) over what the mirror logs (sebench/tracking/runs.py):

    build_workspace(project, entity, experiment=None, stages=()) -> wandb_workspaces.workspaces.Workspace
    definition(workspace) -> dict           # the view W&B stores: what save() uploads, as a file or for tests
    save(workspace) -> str                  # upload it (an API key and the network); the workspace's URL
    check_can_save(entity)                  # save()'s prerequisites, checked before anything is written

Sections: learning curves per arm (the runs grouped by config "arm", mean over seeds, band = min-max, epochs
on the x axis); final error per arm with one point per seed (x = config "arm_index", the spec's table order)
beside the per-arm mean ± std; accuracy against training and inference throughput; the excitation histograms
per stage; the paired deltas of complete tables (the "deltas" table of the table-<spec>-<profile> runs).
Config keys used here are dot-free ("arm", "arm_index", "seed"): wandb-workspaces reads a dotted key as a
nested one, and the mirror logs flattened keys such as "model.se.reduction".
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Iterable, Optional

CURVES = [("test_top1_err", "test top-1 error (%)"), ("test_top5_err", "test top-5 error (%)"),
          ("test_loss", "test loss"), ("train_loss", "train loss")]
TRAINING = [("lr", "learning rate"), ("train_img_s", "training throughput (img/s)"),
            ("epoch_s", "epoch time (s)")]


def excitation_stages(results: str | Path, experiment: Optional[str] = None) -> list[int]:
    """The stages with SE blocks in the store's analysed runs (analysis/excitation_summary.csv of
    `sebench analyze`), of one experiment or all: one histogram panel each."""
    stages = set()
    for path in Path(results).glob(f"runs/{experiment or '*'}/*/analysis/excitation_summary.csv"):
        try:
            with open(path, newline="", encoding="utf-8") as f:
                stages |= {int(m.group(1)) for row in csv.DictReader(f)
                           if (m := re.match(r"^SE_(\d+)_\d+$", row.get("block") or ""))}
        except (OSError, csv.Error, UnicodeDecodeError):
            continue  # a damaged analysis: the others still name the stages
    return sorted(stages)


def build_workspace(project: str, entity: Optional[str] = None, experiment: Optional[str] = None,
                    stages: Iterable[int] = ()):
    """The sebench workspace of `project` (one experiment's runs, W&B group = experiment, or all)."""
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    arm = wr.Config("arm")

    def curve(key: str, title: str):
        return wr.LinePlot(title=title, x="epoch", y=[key], title_x="epoch", title_y=title, groupby=arm,
                           groupby_aggfunc="mean", groupby_rangefunc="minmax")

    stages = list(stages)
    histograms = ([wr.LinePlot(title=f"excitation, stage {s}: channels' mean gate over the test set", x="epoch",
                               y=[f"excitation/stage_{s}"]) for s in stages]
                  or [wr.LinePlot(title="excitation histograms, every stage", x="epoch",
                                  metric_regex="excitation/stage_.*")])
    sections = [
        ws.Section(name="Learning curves per arm (mean over seeds, band = min-max)", is_open=True,
                   panels=[curve(k, t) for k, t in CURVES]),
        ws.Section(name="Final error per arm (one point per seed)", is_open=True, panels=[
            wr.ScatterPlot(title="final test top-1 error (%) per arm, one point per seed",
                           x=wr.Config("arm_index"), y=wr.SummaryMetric("final_test_top1_err")),
            wr.BarPlot(title="final test top-1 error (%), mean ± std over seeds", metrics=["final_test_top1_err"],
                       groupby=arm, groupby_aggfunc="mean", groupby_rangefunc="stddev"),
            wr.BarPlot(title="final test top-5 error (%), mean ± std over seeds", metrics=["final_test_top5_err"],
                       groupby=arm, groupby_aggfunc="mean", groupby_rangefunc="stddev"),
        ]),
        ws.Section(name="Accuracy vs throughput", is_open=True, panels=[
            wr.ScatterPlot(title="final top-1 accuracy (%) vs training img/s", x=wr.SummaryMetric("train_img_s"),
                           y=wr.SummaryMetric("final_test_top1_acc")),
            wr.ScatterPlot(title="final top-1 accuracy (%) vs inference img/s", x=wr.SummaryMetric("infer_img_s"),
                           y=wr.SummaryMetric("final_test_top1_acc")),
        ]),
        ws.Section(name="Excitation histograms per stage (`sebench analyze RUN --wandb`)", panels=histograms),
        ws.Section(name="Paired deltas of complete tables (variant - baseline, 95% t interval)",
                   panels=[wr.WeavePanelSummaryTable(table_name="deltas")]),
        ws.Section(name="Training", panels=[curve(k, t) for k, t in TRAINING]),
    ]
    return ws.Workspace(
        name=f"sebench: {experiment}" if experiment else "sebench", entity=entity or "", project=project,
        sections=sections, settings=ws.WorkspaceSettings(x_axis="epoch", max_runs=100),
        runset_settings=ws.RunsetSettings(
            filters=expr.And(expr.Metric("Group") == experiment) if experiment else "",
            pinned_columns=["config:arm", "config:seed", "summary:final_test_top1_err",
                            "summary:final_test_top5_err", "summary:params", "summary:flops",
                            "summary:train_img_s", "summary:infer_img_s"]))


def definition(workspace) -> dict:
    """What W&B stores for the workspace (the view spec that save() uploads), as JSON-ready data."""
    view = workspace._to_model()
    return {"entity": view.entity or None, "project": view.project, "name": view.display_name,
            "spec": json.loads(view.spec.model_dump_json(by_alias=True, exclude_none=True))}


def check_can_save(entity: Optional[str]) -> None:
    """Before anything is written: what save() needs that the user gives (UserError naming the fix)."""
    from sebench.errors import UserError
    from sebench.tracking.core import api_key_available

    if not entity:
        raise UserError("saving a workspace needs the W&B entity (user or team) that owns the project",
                        where="--entity", fix="pass --entity NAME or set WANDB_ENTITY")
    if not api_key_available():
        raise UserError("no W&B API key", where="wandb-dashboard --save",
                        fix="set WANDB_API_KEY or run `wandb login`, then run it again")


def save(workspace) -> str:
    """Create the workspace in W&B (wandb-workspaces' upsert through wandb.Api: the API key, the network); its
    URL. UserError with one line when W&B refuses or cannot be reached."""
    from sebench.errors import UserError

    check_can_save(workspace.entity)
    try:
        workspace.save()
        return workspace.url
    except Exception as exc:  # refused, unreachable, unknown project: one line, never a traceback
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise UserError(f"W&B did not save the workspace ({type(exc).__name__}: {first})",
                        where=f"{workspace.entity}/{workspace.project}",
                        fix="check --entity, --project (the project must exist: mirror a run first) and the "
                            "network, then run it again") from None
