"""A run directory's W&B run, whose id is the run_id: opened or continued, its epochs, excitation histograms
and summary (mirror_run); a complete table's paired deltas (mirror_table); a report's tables and plots
(mirror_report)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from sebench.tracking.core import (_abandon, _finish, _import_wandb, _init, _read_json, _redact, _secrets,
                                   default_dir, flatten, logged_so_far, resolve_mode)


@dataclass
class _Open:
    """A W&B run this process holds open for one run directory."""
    run: Any
    run_dir: Path
    step: int  # the last history step W&B has for this id (0: none)
    histograms: bool  # excitation histograms already logged
    since: Optional[float] = None  # epoch records older than this belong to a discarded attempt


def _results_root(run_dir: Path) -> Path:
    """results/ of results/runs/<experiment>/<run_id>."""
    resolved = run_dir.resolve()
    return resolved.parents[2] if len(resolved.parents) > 2 else run_dir.parent


def _summary(run_dir: Path) -> dict:
    """summary.json read through its schema (records.RunSummary), as a mapping to mirror; {} while the run
    trains, or when the record is damaged (mirrored without it; the store's readers report it)."""
    from sebench.errors import UserError
    from sebench.records import RunSummary
    from sebench.store import RunDir

    path = RunDir(run_dir).summary
    try:
        return RunSummary.read(path).to_json() if path.exists() else {}
    except UserError:
        return {}


def arm_text(labels: dict) -> str:
    """An arm: a run's sweep labels without its seed ("model=ResNet-20, se=SENet"), the W&B config "arm"."""
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "(base)"


def _open(wandb, run_dir: Path, *, project: str, mode: Optional[str], dir, entity: Optional[str],
          arm_index: Optional[int] = None) -> Optional[_Open]:
    """Open (create or continue) the W&B run of `run_dir` from its config.yaml (env.json and summary.json when
    there). None when W&B is unavailable."""
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    env = _read_json(run_dir / "env.json")
    summary = _summary(run_dir)
    run_id = str(config.get("run_id") or summary.get("run_id") or run_dir.name)
    labels = config.get("labels") or summary.get("labels") or {}
    seed = config.get("seed", summary.get("seed"))
    name = f"{run_id} {arm_text(labels) if labels else ''}".strip() + (f" seed {seed}" if seed is not None else "")
    tags = [str(config.get("profile") or summary.get("profile") or "adhoc")] + [f"{k}={v}" for k, v in labels.items()]
    flat = flatten(config)
    flat.update({f"env.{k}": v for k, v in flatten(env).items()})
    flat["arm"] = arm_text(labels)  # dot-free keys: what the dashboard groups and plots by
    if arm_index is not None:
        flat["arm_index"] = arm_index
    where = Path(dir) if dir is not None else default_dir(_results_root(run_dir))
    where.mkdir(parents=True, exist_ok=True)
    step, histograms = logged_so_far(where, run_id)
    run = _init(wandb, project=project, entity=entity, dir=str(where), mode=resolve_mode(mode), id=run_id,
                resume="allow", name=name, group=config.get("experiment") or summary.get("experiment"),
                job_type="train", tags=[t[:64] for t in tags], config=_redact(flat, _secrets()))  # 64: W&B's limit
    if run is None:
        return None
    run.define_metric("epoch")
    run.define_metric("*", step_metric="epoch")
    step = max(step, int(getattr(run, "starting_step", 0) or 0) - 1)  # online: where the server's run ends
    return _Open(run, run_dir, step, histograms)


def _log_epochs(live: _Open) -> Optional[int]:
    """Log the epochs of metrics.jsonl that W&B does not have yet (step = epoch); the last epoch in the file."""
    from sebench.store import read_jsonl

    last = None
    for rec in read_jsonl(live.run_dir / "metrics.jsonl"):
        if "epoch" not in rec:
            continue
        last = epoch = int(rec["epoch"])
        if epoch <= live.step or (live.since is not None and rec.get("time", 0) < live.since):
            continue
        values = {k: v for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                  and k != "time"}
        live.run.log({**values, "epoch": epoch}, step=epoch, commit=True)  # a row now, not at the next epoch
        live.step = epoch
    return last


def excitation_by_stage(run_dir: str | os.PathLike) -> dict[int, list[float]]:
    """{stage: each channel's mean gate over the test images, over the stage's SE blocks} from the run's
    `sebench analyze` output (analysis/excitation_stats.csv, class 'all'); {} without one."""
    path = Path(run_dir) / "analysis" / "excitation_stats.csv"
    if not path.is_file():
        return {}
    import pandas as pd

    frame = pd.read_csv(path, usecols=["block", "class", "mean"], keep_default_na=False, dtype={"class": str})
    frame = frame[frame["class"] == "all"]
    out: dict[int, list[float]] = {}
    for block, mean in zip(frame["block"], frame["mean"]):
        m = re.match(r"^SE_(\d+)_\d+$", str(block))
        if m:
            out.setdefault(int(m.group(1)), []).append(float(mean))
    return dict(sorted(out.items()))


def _histograms(wandb, run_dir: Path) -> dict:
    import numpy as np

    out = {}
    for stage, values in excitation_by_stage(run_dir).items():
        lo, hi = min(0.0, min(values)), max(1.0, max(values))  # sigmoid gates fill [0, 1]; tanh/relu may not
        out[f"excitation/stage_{stage}"] = wandb.Histogram(np_histogram=np.histogram(values, bins=40, range=(lo, hi)))
    return out


def _complete(wandb, live: _Open) -> Path:
    """The end of a run: epochs not logged yet, excitation histograms (once), env, summary; finish."""
    run, run_dir = live.run, live.run_dir
    last = _log_epochs(live)
    if not live.histograms:
        hist = _histograms(wandb, run_dir)
        if hist:  # after the last epoch's step, drawn at that epoch
            live.step += 1
            run.log({**hist, "epoch": last or 0}, step=live.step, commit=True)
            live.histograms = True
    secrets = _secrets()
    summary = _summary(run_dir)
    env = _read_json(run_dir / "env.json")
    run.config.update(_redact({f"env.{k}": v for k, v in flatten(env).items()}, secrets), allow_val_change=True)
    final = {f"final_test_top{k}_acc": 100.0 - summary[f"final_test_top{k}_err"] for k in (1, 5)
             if isinstance(summary.get(f"final_test_top{k}_err"), (int, float))}
    run.summary.update(_redact({**flatten(summary), **final}, secrets))
    status = summary.get("status")
    if status not in (None, "finished"):
        run.tags = tuple(run.tags) + (str(status)[:64],)
    return _finish(wandb, run, exit_code=0 if status == "finished" else 1)


def mirror_run(run_dir: str | os.PathLike, project: str = "sebench", mode: Optional[str] = None,
               dir: Optional[str | os.PathLike] = None, entity: Optional[str] = None, *,
               arm_index: Optional[int] = None, _live: Optional[_Open] = None) -> Optional[Path]:
    """Mirror one run directory of the store (results/runs/<experiment>/<run_id>) to its W&B run (id = run_id),
    creating it or continuing it (`_live`: the one a LiveMirror holds open).

    config = config.yaml flattened ("model.se.reduction") plus env.json under "env.", "arm" (the sweep
    labels) and "arm_index"; group = experiment; tags = [profile, "axis=label"..., status if not finished];
    name = run_id, labels and seed; one W&B step per epoch of metrics.jsonl not logged yet (step = epoch);
    the excitation histograms per stage when `sebench analyze` has run; summary = summary.json plus
    final_test_top1_acc/top5_acc. Returns the local W&B run folder, or None when W&B is unavailable or
    failed (after one warning per process)."""
    run_dir = Path(run_dir)
    wandb = _import_wandb()
    if wandb is None:
        return None
    live = _live
    try:
        if live is None:
            live = _open(wandb, run_dir, project=project, mode=mode, dir=dir, entity=entity, arm_index=arm_index)
            if live is None:
                return None
        return _complete(wandb, live)
    except Exception as exc:
        _abandon(live.run if live else None, f"mirroring {run_dir} failed ({type(exc).__name__}: {exc})")
        return None


def table_run_id(experiment: str, profile: str) -> str:
    """The W&B id of a table's run: one per (spec, profile), continued whenever the table completes again."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", f"table-{experiment}-{profile}")[:64]


def mirror_table(spec, profile: str, results: str | os.PathLike, project: str = "sebench",
                 mode: Optional[str] = None, dir: Optional[str | os.PathLike] = None,
                 entity: Optional[str] = None) -> Optional[Path]:
    """When every run `spec` plans in `profile` has finished: its table's paired deltas (variant − same-recipe
    baseline, paired by seed, 95% t interval; report.tables) into the W&B run table-<spec>-<profile>, as a
    wandb.Table "deltas" (the table's CSV records) and summary keys delta/<row>/<metric> = {mean, low, high,
    n, verdict} (delta_second/... against a second baseline, where the spec marks one). None when the table is
    incomplete or W&B unavailable."""
    from sebench.report.data import gather, store_rows
    from sebench.report.tables import SECOND, build_table

    wandb = _import_wandb()
    if wandb is None:
        return None
    run = None
    try:
        data = gather(spec, profile, results, rows=store_rows(results, profile))
        if not data.expected or not all({rc.seed for rc in rcs} <= set(data.runs(combo))
                                        for combo, rcs in data.expected.items()):
            return None  # not complete yet
        table = build_table(data)
        where = Path(dir) if dir is not None else default_dir(Path(results))
        where.mkdir(parents=True, exist_ok=True)
        run_id = table_run_id(spec.name, profile)
        step, _ = logged_so_far(where, run_id)
        run = _init(wandb, project=project, entity=entity, dir=str(where), mode=resolve_mode(mode), id=run_id,
                    resume="allow", name=f"table {spec.name} [{profile}]", group=spec.name, job_type="table",
                    tags=[profile, "table"], config={"experiment": spec.name, "profile": profile,
                                                      "title": spec.title, "runs": table.n_finished})
        if run is None:
            return None
        columns = table.csv_columns
        rows = [[_cell(rec.get(c)) for c in columns] for rec in table.records]
        run.log({"deltas": wandb.Table(columns=columns, data=rows, allow_mixed_types=True)}, step=step + 1)
        deltas = {}
        for rec in table.records:
            cell = rec["row"] + (f" / {rec['column']}" if rec.get("column") else "")
            for key, p in (("delta", ""), ("delta_second", SECOND)):
                if rec.get(p + "delta_n"):
                    deltas[f"{key}/{cell}/{rec['metric']}"] = {
                        "mean": rec[p + "delta"], "low": rec.get(p + "delta_low"), "high": rec.get(p + "delta_high"),
                        "n": rec[p + "delta_n"], "baseline": rec.get(p + "baseline"), "verdict": rec.get(p + "verdict")}
        run.summary.update(deltas)
        return _finish(wandb, run)
    except Exception as exc:
        _abandon(run, f"mirroring the {spec.name} [{profile}] table failed ({type(exc).__name__}: {exc})")
        return None


def _cell(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def mirror_report(profile: str, tables: Iterable[str | os.PathLike], plots: Iterable[str | os.PathLike],
                  project: str = "sebench", mode: Optional[str] = None, dir: Optional[str | os.PathLike] = None,
                  entity: Optional[str] = None) -> Optional[Path]:
    """Log a report into one W&B run named `report-<profile>`: each table CSV as a wandb.Table under
    `tables/<spec>`, each PNG plot as a wandb.Image under `plots/<name>` (other files are skipped). The default
    `dir` is the parent of the results root the tables live in (results/<profile>/tables/x.csv)."""
    tables = [Path(t) for t in tables if Path(t).suffix == ".csv"]
    plots = [Path(p) for p in plots if Path(p).suffix == ".png"]
    wandb = _import_wandb()
    if wandb is None:
        return None
    run = None
    try:
        import pandas as pd

        if dir is None:
            anchor = (tables or plots)[0].resolve() if (tables or plots) else Path("results/x/y/z").resolve()
            dir = default_dir(anchor.parents[2])
        Path(dir).mkdir(parents=True, exist_ok=True)
        run = _init(wandb, project=project, entity=entity, dir=str(dir), mode=resolve_mode(mode),
                    name=f"report-{profile}", group="report", job_type="report", tags=[profile, "report"],
                    config={"profile": profile, "tables": [t.stem for t in tables],
                            "plots": [p.stem for p in plots]})
        if run is None:
            return None
        logged = {}
        for t in tables:
            frame = pd.read_csv(t, dtype=str, keep_default_na=False)
            logged[f"tables/{t.stem}"] = wandb.Table(dataframe=frame)
        for p in plots:
            logged[f"plots/{p.stem}"] = wandb.Image(str(p), caption=p.stem)
        if logged:
            run.log(logged)
        return _finish(wandb, run)
    except Exception as exc:
        _abandon(run, f"mirroring the {profile} report failed ({type(exc).__name__}: {exc})")
        return None
