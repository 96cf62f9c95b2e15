"""The results store: run directories (their layout: RunDir) and crash-safe writes.

Every file a run writes goes through here. Whole files are replaced atomically (temp file in the same
directory, fsync, os.replace), so a reader or a killed writer never sees half a file; logs are JSON lines
appended with fsync, and a line torn by a crash is dropped when read and cut before the next append.
"""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator, Optional, Union

from sebench.errors import UserError
from sebench.records import RunSummary

PathLike = Union[str, os.PathLike]

LOCK_NAME = ".lock"  # one runner per run (runner.locks); git-ignored
SPEED_FILE = "speed.json"
# Where a training run is within its epoch (fit rewrites it every few seconds; sebench.progress reads it).
# Transient: removed when the run ends, git-ignored, read by nothing that makes a number.
PROGRESS_FILE = ".progress.json"

class RunDir:
    """One run's folder, <root>/runs/<experiment>/<run_id>, and its layout: every file a run's records
    consist of is named here and nowhere else.

        config.yaml    the complete RunConfig with its run id (write_run_config)
        env.json       versions, git state, hardware, threads, data; each resume appends a record
        metrics.jsonl  one line per finished epoch
        summary.json   written last (records.RunSummary): finished, or failed with the reason
        ckpt/          last.pt, prev.pt (engine.checkpoint; git-ignored)
        speed.json     `sebench speed`'s re-measurement;  analysis/  `sebench analyze`'s study
        .lock, .progress.json   while a runner holds it / while it trains (git-ignored)
    """

    def __init__(self, path: PathLike):
        self.path = Path(path)

    @classmethod
    def of(cls, root: PathLike, experiment: str, run_id: str) -> "RunDir":
        return cls(Path(root) / "runs" / experiment / run_id)

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    config = property(lambda self: self.path / "config.yaml")
    env = property(lambda self: self.path / "env.json")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    summary = property(lambda self: self.path / "summary.json")
    ckpt = property(lambda self: self.path / "ckpt")
    speed = property(lambda self: self.path / SPEED_FILE)
    analysis = property(lambda self: self.path / "analysis")
    lock = property(lambda self: self.path / LOCK_NAME)
    progress = property(lambda self: self.path / PROGRESS_FILE)

    def has_checkpoint(self) -> bool:
        """Whether the run resumes (from its last epoch checkpoint) rather than training from epoch 1."""
        return self.ckpt.is_dir() and any(self.ckpt.glob("*.pt"))

    def read_summary(self) -> Optional[RunSummary]:
        """The run's summary, None when it has none yet; UserError (file, field, fix) when damaged."""
        if not self.summary.exists():
            return None
        return RunSummary.read(self.summary)

    def recorded_status(self) -> Optional[str]:
        """'finished' or 'failed' as the summary says, 'damaged' when it cannot be trusted (quarantined:
        see DamagedRun), None without one."""
        try:
            summary = read_checked_summary(self.path)
        except UserError:
            return "damaged"
        return summary.status if summary is not None else None

    def write_summary(self, summary: RunSummary) -> None:
        atomic_write_json(self.summary, summary.to_json())


def check_writable(directory: PathLike) -> Path:
    """Create `directory` (with its parents) and prove that a file can be written in it, before any work
    starts; a UserError naming the folder otherwise (a read-only mount, a file where a folder should be,
    missing permissions, a full disk)."""
    directory = Path(directory)
    probe = directory / f".write-test.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UserError(f"cannot write to the results folder ({reason})", where=str(directory),
                        fix="choose another --results folder, or make this one writable") from None
    return directory


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable (POSIX); directories cannot be opened for fsync on Windows."""
    if os.name != "posix":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: PathLike, mode: str = "w", *, backup: Optional[PathLike] = None) -> Iterator[IO]:
    """Open a temp file beside `path`; on a clean exit fsync it and rename it onto `path`.

    With `backup`, an existing `path` is first renamed to `backup`, so at every instant at least one
    complete version exists under one of the two names. On an exception the temp file is removed and
    `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open rather than mkstemp: mkstemp's 0600 would make records unreadable to the rest of a team;
    # 0666 here is narrowed by the umask like any ordinary file.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if backup is not None and path.exists():
            os.replace(path, backup)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl(path: PathLike, records: Iterable[dict]) -> None:
    """Replace a JSON-lines file atomically (e.g. to drop records after a resume point)."""
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def _cut_torn_tail(f: IO[bytes]) -> None:
    """Truncate `f` (opened r+b) after its last newline, removing a line a crash left unfinished."""
    end = f.seek(0, os.SEEK_END)
    if end == 0:
        return
    f.seek(end - 1)
    if f.read(1) == b"\n":
        return
    f.seek(0)
    keep = f.read().rfind(b"\n") + 1
    f.truncate(keep)
    f.seek(keep)


def append_jsonl(path: PathLike, record: dict) -> None:
    """Append one JSON line and fsync it; a torn last line from an earlier crash is cut first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record) + "\n").encode()
    with open(path, "r+b" if path.exists() else "wb") as f:
        _cut_torn_tail(f)
        f.seek(0, os.SEEK_END)
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: PathLike) -> list[dict]:
    """Records of a JSON-lines file ([] if it does not exist). An unreadable last line is a write torn
    by a crash and is dropped; an unreadable line anywhere else is corruption and raises UserError."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise UserError(f"line {i + 1} is not valid JSON", where=str(path),
                            fix="repair or delete the line") from None
    return records


def read_finished_run(run_dir: PathLike):
    """(RunConfig, recorded run id, RunSummary, the command that reruns it) of a finished run; UserError
    naming the file otherwise."""
    import yaml
    from pydantic import ValidationError

    from sebench.spec import RunConfig

    run_dir = Path(run_dir)
    config = RunDir(run_dir).config
    if not config.is_file():
        raise UserError("not a run directory (no config.yaml)", where=str(run_dir),
                        fix="pass a folder results/runs/<experiment>/<run_id>")
    try:
        raw = yaml.safe_load(config.read_text()) or {}
        run_id = raw.pop("run_id", None)
        cfg = RunConfig.model_validate(raw)
    except (yaml.YAMLError, ValidationError, AttributeError) as exc:
        first = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc).splitlines()[0]
        raise UserError(f"unreadable run configuration ({first})", where=str(config)) from None
    run_id = run_id or cfg.run_id
    rerun = f"`sebench run {cfg.experiment} --profile {cfg.profile}`"
    where = RunDir(run_dir)
    try:
        summary = where.read_summary()
    except UserError:
        summary = None
    if summary is None or not summary.finished:
        state = "no readable summary" if summary is None else f"status {summary.status!r}"
        raise UserError(f"the run has not finished ({state})", where=str(where.summary),
                        fix=f"finish it first: {rerun} resumes it")
    return cfg, run_id, summary, rerun


def write_run_config(directory: PathLike, rc) -> None:
    """config.yaml: the complete RunConfig `rc` with its run id first (what `fit` and `adopt_run` write)."""
    import yaml

    atomic_write_text(RunDir(directory).config,
                      yaml.safe_dump({"run_id": rc.run_id, **rc.model_dump(mode="json")}, sort_keys=False))


def recipe_key(rc) -> str:
    """What makes two runs the same training, whichever experiment they belong to: the run's identity
    without its experiment name, plus the post-training benchmark settings (its inference img/s)."""
    ident = {k: v for k, v in rc.identity().items() if k != "experiment"}
    return json.dumps({**ident, "benchmark": rc.benchmark.model_dump(mode="json")}, sort_keys=True)


def adopt_run(source: PathLike, rc, dest: PathLike) -> RunSummary:
    """Record `rc` as finished with the records of the finished run in `source`, which trained the same
    recipe (equal :func:`recipe_key`) for another experiment: the ablation tables of a paper share one
    baseline, and training it again gives the same numbers (same seed, same data order) at full cost.
    metrics.jsonl is copied, env.json and summary.json say ``reused_from: <experiment>/<run_id>``; the
    summary, written last, makes the run count as finished. Checkpoints stay with the source."""
    source, dest = RunDir(source), RunDir(dest)
    origin = f"{source.path.parent.name}/{source.path.name}"
    summary = RunSummary.read(source.summary)
    dest.path.mkdir(parents=True, exist_ok=True)
    write_run_config(dest.path, rc)
    atomic_write_text(dest.metrics, source.metrics.read_text())
    env = json.loads(source.env.read_text()) if source.env.exists() else {}
    atomic_write_json(dest.env, {**env, "run_id": rc.run_id, "reused_from": origin})
    summary = summary.model_copy(update=dict(run_id=rc.run_id, experiment=rc.experiment,
                                             labels=dict(rc.labels), reused_from=origin))
    dest.write_summary(summary)
    return summary


# ---- consolidation --------------------------------------------------------------------------------------

# The columns of results/<profile>/runs.csv, in order; sweep labels follow as `label.<axis>` columns.
RUN_COLUMNS = [
    "experiment", "run_id", "profile", "status", "model", "se", "se_stages", "surgery", "dataset", "seed",
    "epochs", "batch_size", "final_test_top1_err", "final_test_top5_err", "final_test_loss",
    "final_train_loss", "params", "flops", "input_size", "train_img_s", "infer_img_s", "infer_batch_size",
    "device", "device_name", "threads", "world_size", "amp", "channels_last", "wall_s", "torch", "timm",
    "git_commit", "time", "reason", "reused_from",
    "speed_train_img_s", "speed_train_img_s_min", "speed_train_img_s_max", "speed_infer_img_s",
    "speed_infer_img_s_min", "speed_infer_img_s_max", "speed_device_name", "speed_threads", "speed_repeats",
]  # world_size: processes of a data-parallel run (train_img_s is their total); empty for older runs.
# speed_*: the run's configuration re-measured with its table's others in one sitting (`sebench speed`,
# speed.json in the run folder); empty until then. reused_from: <experiment>/<run_id> of the identical run
# whose records this one carries (store.adopt_run).
SPEED_COLUMNS = [c for c in RUN_COLUMNS if c.startswith("speed_")]

def hardware_text(device_name: Optional[str], device: Optional[str], threads=None) -> str:
    """How tables and figures name where a run trained, from its records: 'Intel Xeon (cpu, 1 thread)'.
    `threads` may be read back from runs.csv as a float; it is shown for CPUs only."""
    where = device or "?"
    if where == "cpu" and isinstance(threads, (int, float)) and threads == threads:  # not NaN
        n = int(threads) if float(threads).is_integer() else threads
        where += f", {n} thread{'' if n == 1 else 's'}"
    return f"{device_name or 'unknown device'} ({where})"


QUARANTINE_FIX = ("delete it (`rm {path}`): the run then resumes from its checkpoint, or trains again; "
                  "`sebench doctor` lists every damaged record")


class DamagedRun:
    """A run folder whose summary.json cannot be trusted: quarantined (left where it is, excluded from
    runs.csv and tables, skipped by `run`), and reported by collect, report and `sebench doctor`."""

    def __init__(self, directory: Path, error: UserError):
        self.directory = Path(directory)
        self.error = error

    experiment = property(lambda self: self.directory.parent.name)
    run_id = property(lambda self: self.directory.name)

    def line(self) -> str:
        """What is wrong and the fix, in one line."""
        fix = QUARANTINE_FIX.format(path=RunDir(self.directory).summary)
        return f"{self.experiment}/{self.run_id}: {self.error.message} ({self.error.where}" + (
            f", field '{self.error.field}'" if self.error.field else "") + f"); {fix}"


def check_summary(directory: Path, summary: RunSummary) -> None:
    """A readable summary that still cannot be trusted (copied from another folder, or 'finished' without
    its final numbers): UserError naming the field, so it is quarantined instead of filling a table cell
    with another run's numbers or with nothing."""
    where = str(RunDir(directory).summary)
    for field, expected in (("run_id", directory.name), ("experiment", directory.parent.name)):
        if getattr(summary, field) != expected:
            raise UserError(f"damaged run summary ({field} {getattr(summary, field)!r} is not its folder's "
                            f"{expected!r})", where=where, field=field)
    if summary.finished and summary.final_test_top1_err is None:
        raise UserError("damaged run summary ('finished' without final numbers)", where=where,
                        field="final_test_top1_err")


def read_checked_summary(directory: PathLike) -> Optional[RunSummary]:
    """RunDir.read_summary plus check_summary: None without a summary, UserError when it is damaged."""
    directory = Path(directory)
    summary = RunDir(directory).read_summary()
    if summary is not None:
        check_summary(directory, summary)
    return summary


def iter_summaries(root: PathLike, damaged: Optional[list] = None) -> Iterator[tuple[Path, RunSummary]]:
    """(run directory, summary) for every run under <root>/runs that has a trustworthy summary. A damaged
    one (not JSON, not an object, a bad field, another run's) is never silently dropped: pass a list as
    `damaged` to receive it as a DamagedRun (collect, report and doctor show them; see damaged_runs)."""
    for path in sorted(Path(root).glob("runs/*/*/summary.json")):
        try:
            summary = read_checked_summary(path.parent)
        except UserError as err:
            if damaged is not None:
                damaged.append(DamagedRun(path.parent, err))
            continue
        yield path.parent, summary


def damaged_runs(root: PathLike, experiment: Optional[str] = None) -> list[DamagedRun]:
    """The quarantined run records under <root>/runs (of one experiment, when given)."""
    found: list[DamagedRun] = []
    for _ in iter_summaries(root, found):
        pass
    return [d for d in found if experiment is None or d.experiment == experiment]


def read_speed(directory: PathLike) -> dict:
    """A run's speed.json (`sebench speed`), or {} when there is none yet (it is written atomically:
    unreadable means damaged, and `sebench speed` measures again)."""
    try:
        return json.loads(RunDir(directory).speed.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def read_progress(directory: PathLike) -> dict:
    """A running run's heartbeat (PROGRESS_FILE), or {} when there is none or it cannot be read."""
    try:
        beat = json.loads(RunDir(directory).progress.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return beat if isinstance(beat, dict) else {}


def write_progress(directory: PathLike, beat: dict) -> None:
    """Replace a run's heartbeat: temp file and rename, without fsync (it is rewritten every few seconds,
    and losing the last one to a crash loses nothing)."""
    path = RunDir(directory).progress
    tmp = path.with_name(f"{PROGRESS_FILE}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(beat))
    os.replace(tmp, path)


def clear_progress(directory: PathLike) -> None:
    RunDir(directory).progress.unlink(missing_ok=True)


def run_rows(root: PathLike, profile: Optional[str] = None, damaged: Optional[list] = None) -> list[dict]:
    """One flat row per run (finished or failed), optionally for one profile; damaged records go to
    `damaged` (iter_summaries)."""
    import yaml

    rows = []
    for directory, summary in iter_summaries(root, damaged):
        if profile is not None and summary.profile != profile:
            continue
        record = summary.to_json()
        row = {k: record.get(k) for k in RUN_COLUMNS}
        if row["se_stages"] is not None:
            row["se_stages"] = ",".join(map(str, row["se_stages"]))
        if row["input_size"] is not None:
            row["input_size"] = "x".join(map(str, row["input_size"]))
        config = RunDir(directory).config
        if config.exists():
            surgery = (yaml.safe_load(config.read_text()) or {}).get("model", {}).get("surgery")
            if surgery:
                row["surgery"] = (f"min_channels {surgery['min_channels']}, latent {surgery['latent_channels']}, "
                                  f"{surgery['variant']}")
        for axis, label in summary.labels.items():
            row[f"label.{axis}"] = label
        speed = read_speed(directory)
        row.update({c: speed.get(c.removeprefix("speed_")) for c in SPEED_COLUMNS})
        rows.append(row)
    return rows


def collect(root: PathLike, profile: Optional[str] = None, damaged: Optional[list] = None) -> dict[str, Path]:
    """Consolidate every run into <root>/<profile>/runs.csv (one row per run, sorted), for one profile or
    each profile found. Returns {profile: path}; damaged records (quarantined, not in runs.csv) go to
    `damaged`."""
    import pandas as pd

    rows = run_rows(root, profile, damaged)
    written: dict[str, Path] = {}
    for prof in sorted({r["profile"] for r in rows if r["profile"]}):
        frame = pd.DataFrame([r for r in rows if r["profile"] == prof])
        labels = sorted(c for c in frame.columns if c.startswith("label."))
        frame = frame[RUN_COLUMNS + labels].sort_values(["experiment", *labels, "seed", "run_id"])
        frame = frame.drop_duplicates("run_id")
        out = Path(root) / prof / "runs.csv"
        atomic_write_text(out, frame.to_csv(index=False))
        written[prof] = out
    return written
