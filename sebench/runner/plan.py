"""What a sweep has to do: the runs a spec expands into (seed-major), each with its status in the store
(finished, partial, failed, missing, locked), the `--only` selection, and the runs another experiment
already trained (adopted instead of trained again).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sebench.data.registry import default_data_path
from sebench.errors import UserError
from sebench.runner.locks import acquire_lock, lock_holder_alive, release_lock
from sebench.spec import ExecutionCfg, PendingRow, RunConfig, Spec, expand
from sebench.store import RunDir


@dataclass
class PlanRow:
    """One run of a sweep's plan: its config, its status in the store (run_status; 'reusable' in a plan
    and 'reused' in a sweep when another experiment's identical run is adopted) and its folder."""

    run: RunConfig
    status: str  # finished | partial | failed | missing | locked | damaged; reusable (plan) | reused (run)
    directory: Path
    est_seconds: Optional[float] = None


def run_status(directory: Path) -> str:
    """finished | failed (as its summary says) | damaged (its summary cannot be trusted: quarantined, not
    run until the user deletes it) | locked (a live runner holds it) | partial (it resumes from a
    checkpoint) | missing."""
    run = RunDir(directory)
    status = run.recorded_status()
    if status is not None:
        return status
    if lock_holder_alive(directory):
        return "locked"
    if run.has_checkpoint():
        return "partial"
    return "missing"


def parse_only(items: Optional[list[str]], spec: Spec, profile: str) -> dict[str, set[str]]:
    """`--only AXIS=LABEL` (repeatable; also `seed=N`) -> {axis: labels}. Several labels of one axis are
    alternatives; different axes all apply. Unknown axes or labels are the user's to fix."""
    from sebench.spec import profile_axes

    allowed = {a.axis: [v.label for v in a.values] for a in profile_axes(spec, profile)}
    allowed["seed"] = [str(s) for s in (spec.profiles[profile].seeds or spec.seeds)]
    only: dict[str, set[str]] = {}
    for item in items or []:
        axis, sep, label = (part.strip() for part in item.partition("="))
        if not sep or axis not in allowed:
            raise UserError(f"--only {item!r} names no sweep axis of {spec.name} ({profile})", where=spec.path,
                            field="--only", fix=f"use AXIS=LABEL with AXIS one of: {', '.join(allowed)}")
        if label not in allowed[axis]:
            raise UserError(f"--only {item!r}: {axis} has no value {label!r} in profile {profile!r}",
                            where=spec.path, field="--only",
                            fix=f"{axis} values: {', '.join(repr(v) for v in allowed[axis])}")
        only.setdefault(axis, set()).add(label)
    return only


def _selected(labels: dict, seed: Optional[int], only: dict[str, set[str]]) -> bool:
    return all((str(seed) if axis == "seed" else labels.get(axis)) in values
               for axis, values in only.items() if axis != "seed" or seed is not None)


def plan(spec: Spec, profile: str, results: Path, overrides: Optional[dict] = None,
         only: Optional[dict[str, set[str]]] = None) -> tuple[list[PlanRow], list[PendingRow]]:
    """The runs of `spec` in `profile` (those `only` selects, see parse_only) with their store status,
    and the pending rows."""
    runs, pending = expand(spec, profile, overrides)
    if only:
        runs = [rc for rc in runs if _selected(rc.labels, rc.seed, only)]
        pending = [p for p in pending if _selected(p.labels, None, only)]
    # Seed-major (every row of the first seed, then the next seed, ...; the table's order within a seed):
    # a sweep stopped part-way leaves whole seeds, so the partial table is still a balanced paired comparison.
    first = {}
    for rc in runs:
        first.setdefault(rc.seed, len(first))
    runs.sort(key=lambda rc: first[rc.seed])
    rows = []
    for rc in runs:
        d = RunDir.of(results, rc.experiment, rc.run_id).path
        rows.append(PlanRow(rc, run_status(d), d))
    return rows, pending


def todo_rows(spec: Spec, profile: str, results: Path, overrides: Optional[dict] = None,
              only: Optional[dict[str, set[str]]] = None
              ) -> tuple[list[PlanRow], list[PlanRow], list[PendingRow]]:
    """(all rows, rows to run, pending rows): missing, partial (resumes) and failed (retried: the cause
    may have been fixed) runs are to run; finished, locked and damaged (quarantined) ones are not."""
    rows, pending = plan(spec, profile, results, overrides, only)
    return rows, [r for r in rows if r.status not in ("finished", "locked", "damaged")], pending


def log_plan(name: str, profile: str, rows: list[PlanRow], pending: list[PendingRow], todo: str, log) -> None:
    """The lines every launcher starts a sweep with: the pending rows, then what the store holds and `todo`
    (e.g. "3 to run")."""
    for p in pending:
        log(f"pending  {labels_text(p.labels)}: {p.reason}")
    count = Counter(r.status for r in rows)
    log(f"{name} [{profile}]: {len(rows)} runs: {count['finished']} finished, "
        + (f"{count['reused']} reused, " if count["reused"] else "")
        + f"{count['locked']} running elsewhere, "
        + (f"{count['damaged']} damaged (quarantined), " if count["damaged"] else "") + todo)


def find_reusable(rows: list[PlanRow], results: Path) -> dict[str, Path]:
    """{run_id: folder} for each missing row whose recipe an original finished run of the store has
    trained in another experiment (store.recipe_key: same model, data, optimiser, schedule, seed, profile...;
    only the experiment name differs). The SE paper's ablation tables share one baseline, and so do this
    suite's specs: training it once per table costs the same and gives the same numbers (same seed and data
    order)."""
    from sebench.store import iter_summaries, read_finished_run, recipe_key

    missing = [r for r in rows if r.status == "missing"]
    if not missing:
        return {}
    donors: dict[str, Path] = {}
    for directory, summary in iter_summaries(results):
        if not summary.finished or summary.reused_from:
            continue  # only originals donate: provenance points at the run that trained
        try:
            cfg = read_finished_run(directory)[0]
        except UserError:
            continue  # unreadable or from an older schema: not provably the same recipe
        donors.setdefault(recipe_key(cfg), directory)
    found = {}
    for row in missing:
        source = donors.get(recipe_key(row.run))
        if source is not None and source != row.directory:
            found[row.run.run_id] = source
    return found


def reuse_identical(rows: list[PlanRow], results: Path, log=print) -> list[PlanRow]:
    """Adopt each run find_reusable finds (store.adopt_run); those rows get status 'reused'.
    `--no-reuse` trains them anyway."""
    from sebench.store import adopt_run

    sources = find_reusable(rows, results)
    for row in rows:
        source = sources.get(row.run.run_id)
        if source is None or not acquire_lock(row.directory):
            continue
        try:
            if run_status(row.directory) != "finished":
                adopt_run(source, row.run, row.directory)
            row.status = "reused"
            log(f"reused   {row.run.run_id}  {labels_text(row.run.labels)} seed {row.run.seed}: the same recipe "
                f"finished as {source.parent.name}/{source.name}")
        finally:
            release_lock(row.directory)
    return rows


def with_execution(rc: RunConfig, **execution) -> RunConfig:
    """`rc` with these execution settings (None keeps the run's own). A run that still has no data path
    takes $SEBENCH_<DATASET> (data.default_data_path) here, at planning time, so the path is recorded in
    the run and training itself reads no environment."""
    merged = {**rc.execution.model_dump(), **{k: v for k, v in execution.items() if v is not None}}
    if merged.get("data_path") is None:
        merged["data_path"] = default_data_path(rc.data.name)
    return rc.model_copy(update={"execution": ExecutionCfg(**merged)})


def labels_text(labels: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in labels.items()) or "(base)"
