"""Live progress of long work, drawn the same way by every command (`sebench run`, `speed`, `analyze`).

A Board has a header (the whole job: done of total and a status) and a fixed number of slots (one per
worker). When its stream (stderr) is a terminal it is drawn with tqdm bars redrawn in place; otherwise
(CI, a log file, SLURM) as plain lines: a snapshot of the header and every busy slot every `interval`
seconds ($SEBENCH_PROGRESS_INTERVAL, default 30). Event lines go above the bars on a terminal and straight
into the log otherwise.

SweepProgress shows a sweep of runs on a Board. It reads only what every run writes into its directory
anyway (metrics.jsonl once per epoch, the heartbeat .progress.json within an epoch), so it needs no channel
to the worker processes: a worker that dies leaves its records behind, and its slot just ends.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, TextIO

from tqdm import tqdm

from sebench.store import RunDir, read_jsonl, read_progress

INTERVAL_ENV = "SEBENCH_PROGRESS_INTERVAL"
DEFAULT_INTERVAL = 30.0  # seconds between snapshots in a log: alive, yet a day's sweep stays readable
RESOLUTION = 1000  # steps of a slot's bar, so that a fraction of an epoch moves it


def log_interval() -> float:
    try:
        return max(0.0, float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL)))
    except ValueError:
        return DEFAULT_INTERVAL


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def clock(seconds: Optional[float]) -> str:
    return "?" if seconds is None else tqdm.format_interval(max(0.0, seconds))


def _braces(text: str) -> str:
    """`text` as a literal inside a tqdm bar_format."""
    return text.replace("{", "{{").replace("}", "}}")


@dataclass
class _Slot:
    desc: str = ""
    fraction: float = 0.0
    status: str = ""
    busy: bool = False


class Board:
    """The header and `slots` slot lines of one long job; see the module's docstring. Thread-safe: a
    background poller may update it while the main thread prints events."""

    def __init__(self, desc: str, total: Optional[int] = None, *, unit: str = "", slots: int = 0,
                 stream: Optional[TextIO] = None, terminal: Optional[bool] = None,
                 interval: Optional[float] = None, enabled: bool = True):
        self.stream = stream or sys.stderr
        self.terminal = is_terminal(self.stream) if terminal is None else terminal
        self.enabled = enabled
        self.interval = log_interval() if interval is None else interval
        self.desc, self.total, self.unit = desc, total, unit
        self.n = 0
        self.status = ""
        self.slots = [_Slot() for _ in range(slots)]
        self.started = self._last_snapshot = time.monotonic()
        self.lock = threading.RLock()
        self._bars: list[tqdm] = []
        if enabled and self.terminal:
            common = dict(file=self.stream, leave=False, dynamic_ncols=True)
            self._bars = [tqdm(total=total, position=0, bar_format="{desc}", **common)]
            self._bars += [tqdm(total=RESOLUTION, position=i + 1, bar_format="{desc}", **common)
                           for i in range(slots)]

    # ---- state ----
    def update(self, n: Optional[int] = None, status: Optional[str] = None, total: Optional[int] = None) -> None:
        with self.lock:
            self.n = self.n if n is None else n
            self.status = self.status if status is None else status
            self.total = self.total if total is None else total
        self.refresh()

    def advance(self, k: int = 1, status: Optional[str] = None) -> None:
        self.update(self.n + k, status)

    def slot(self, i: int, desc: str, fraction: float, status: str) -> None:
        with self.lock:
            self.slots[i] = _Slot(desc, min(1.0, max(0.0, fraction)), status, busy=True)

    def free(self, i: int) -> None:
        with self.lock:
            self.slots[i] = _Slot()

    def header_text(self) -> str:
        count = f"{self.n}/{self.total}" if self.total else f"{self.n}"
        return f"{self.desc}: {count}{' ' + self.unit if self.unit else ''}"

    # ---- output ----
    def refresh(self, force: bool = False) -> None:
        """Redraw the bars (terminal), or print a snapshot when `interval` has passed (log)."""
        if not self.enabled:
            return
        with self.lock:
            elapsed = time.monotonic() - self.started
            if self.terminal:  # the status goes into bar_format itself: tqdm's {postfix} adds a comma
                head = self._bars[0]
                head.total, head.n = self.total, self.n
                head.bar_format = (f"{{desc}} |{{bar:20}}| {_braces(self.status)}" if self.total
                                   else f"{{desc}} {_braces(self.status)}")
                head.set_description_str(f"{self.header_text()} [{clock(elapsed)}]", refresh=False)
                for bar, s in zip(self._bars[1:], self.slots):
                    bar.n = round(s.fraction * RESOLUTION)
                    bar.bar_format = f"  {{desc}} |{{bar:20}}| {_braces(s.status)}" if s.busy else "  {desc}"
                    bar.set_description_str(s.desc if s.busy else "(idle)", refresh=False)
                for bar in self._bars:
                    bar.refresh()
            elif force or (time.monotonic() - self._last_snapshot >= self.interval
                           and (self.total is None or self.n < self.total)):  # nothing left: the caller sums up
                self._last_snapshot = time.monotonic()
                lines = [f"[{clock(elapsed)}] {self.header_text()}" + (f" | {self.status}" if self.status else "")]
                lines += [f"  [{i + 1}] {s.desc}: {100 * s.fraction:.0f}% | {s.status}"
                          for i, s in enumerate(self.slots) if s.busy]
                print("\n".join(lines), file=self.stream, flush=True)

    def print(self, text: str, file: Optional[TextIO] = None) -> None:
        """An event line (to `file`, default this board's stream), above the bars on a terminal."""
        self.above(lambda line: print(line, file=file or self.stream))(text)

    def above(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """`log`, made to print above the bars (cleared, then redrawn) and flushed at once."""
        def write(text: str) -> None:
            with self.lock:
                if self._bars:
                    with tqdm.external_write_mode(file=sys.stdout):
                        log(text)
                        sys.stdout.flush()
                else:
                    log(text)
                    sys.stdout.flush()
                    self.stream.flush()
        return write

    def close(self) -> None:
        with self.lock:
            for bar in reversed(self._bars):
                bar.close()
            self._bars = []

    def __enter__(self) -> "Board":
        self.refresh()
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---- a sweep, read from its run directories ----------------------------------------------------------

@dataclass
class _Run:
    run_id: str
    label: str
    epochs: int
    directory: Path
    slot: Optional[int] = None
    since: Optional[float] = None  # wall time the run was handed to a worker
    fresh: bool = False  # trains from epoch 1: an earlier attempt's epoch log is about to be discarded
    records: list = field(default_factory=list)  # metrics.jsonl as last read
    announced: int = 0  # epochs of this attempt already printed
    beat: dict = field(default_factory=dict)  # the heartbeat as last read, if it is of the current epoch
    outcome: Optional[str] = None


class SweepProgress:
    """Every running run of a sweep on a Board (slot per worker: run id and labels, epoch k/N, last test
    error, img/s), the sweep in its header (finished / running / left, failures, ETA from measured epoch
    times), and a line per finished epoch. A background thread polls the run directories every `poll`
    seconds between the runner's calls to started() and ended()."""

    def __init__(self, title: str, runs: Sequence[tuple[str, str, int, Path]], *, jobs: int,
                 enabled: bool = True, poll: float = 1.0, stream: Optional[TextIO] = None,
                 terminal: Optional[bool] = None, interval: Optional[float] = None):
        self.runs = {rid: _Run(rid, label, epochs, Path(d)) for rid, label, epochs, d in runs}
        self.jobs = max(1, jobs)
        self.poll_s = poll
        self.board = Board(title, len(self.runs), unit="runs", slots=min(self.jobs, len(self.runs)),
                           stream=stream, terminal=terminal, interval=interval, enabled=enabled)
        self.failed = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def above(self, log: Callable[[str], None]) -> Callable[[str], None]:
        return self.board.above(log)

    def started(self, run_id: str, slot: int, *, fresh: bool = False) -> None:
        """`fresh`: the run has no checkpoint, so it trains from epoch 1 and the fit discards any epochs an
        earlier attempt logged; until it does, they must not show as this attempt's progress or pace."""
        if not self.board.enabled:
            return
        with self.board.lock:
            run = self.runs[run_id]
            run.slot, run.since, run.announced, run.fresh = slot, time.time(), 0, fresh
            self._read(run)
        self.poll()

    def ended(self, run_id: str, outcome: str) -> None:
        if not self.board.enabled:
            return
        with self.board.lock:
            run = self.runs[run_id]
            self._read(run)
            self._announce(run)  # the epochs it finished since the last poll
            if run.slot is not None:
                self.board.free(run.slot)
            run.slot, run.outcome = None, outcome
            self.failed += outcome == "failed"
        self.poll()

    def poll(self) -> None:
        """Read the running runs' directories, print their new epochs, redraw."""
        if not self.board.enabled:
            return
        with self.board.lock:
            for run in self.runs.values():
                if run.slot is not None:
                    self._read(run)
                    self._announce(run)
                    self.board.slot(run.slot, run.label, self._fraction(run), self._status(run))
            running = sum(r.slot is not None for r in self.runs.values())
            done = sum(r.outcome is not None for r in self.runs.values())
            left = len(self.runs) - done - running
            self.board.update(done, f"{running} running, {left} left, {self.failed} failed, "
                                    f"ETA {clock(self.eta())}")

    # ---- reading ----
    def _read(self, run: _Run) -> None:
        run.records = read_jsonl(RunDir(run.directory).metrics)
        if run.fresh:
            run.records = self._fresh(run)
        beat = read_progress(run.directory)
        current = (run.records[-1]["epoch"] + 1) if run.records else 1
        run.beat = beat if beat.get("epoch") == current and beat.get("time", 0) >= (run.since or 0) else {}

    def _fresh(self, run: _Run) -> list[dict]:
        """Epoch records this attempt wrote (a resumed run's older lines predate `since`)."""
        return [r for r in run.records if r.get("time", 0) >= (run.since or 0)]

    def _announce(self, run: _Run) -> None:
        fresh = self._fresh(run)
        for r in fresh[run.announced:]:
            self.board.print(f"{run.run_id}  epoch {r['epoch']}/{run.epochs}: train loss {r['train_loss']:.4f}, "
                             f"test top-1 err {r['test_top1_err']:.2f}%, {r['train_img_s']:.0f} img/s, "
                             f"{r['epoch_s']:.1f} s")
        run.announced = max(run.announced, len(fresh))

    def _within(self, run: _Run) -> float:
        steps = run.beat.get("steps") or 0
        return min(1.0, run.beat.get("step", 0) / steps) if steps else 0.0

    def _fraction(self, run: _Run) -> float:
        done = run.records[-1]["epoch"] if run.records else 0
        return min(1.0, (done + self._within(run)) / max(1, run.epochs))

    def _status(self, run: _Run) -> str:
        done = run.records[-1]["epoch"] if run.records else 0
        if done >= run.epochs:
            return f"epoch {done}/{run.epochs} done, measuring inference"
        parts = [f"epoch {done + 1}/{run.epochs}"
                 + (f" {100 * self._within(run):.0f}%" if run.beat else " starting")]
        if run.records:
            parts.append(f"test err {run.records[-1]['test_top1_err']:.2f}%")
        fresh_pace = run.beat.get("elapsed", 0) >= 1.0  # a rate over the first steps alone is noise
        img_s = (run.beat.get("img_s") if fresh_pace else None) or (run.records[-1]["train_img_s"]
                                                                    if run.records else None)
        if img_s:
            parts.append(f"{img_s:.0f} img/s")
        return ", ".join(parts)

    # ---- estimate ----
    def _epoch_seconds(self, run: _Run) -> Optional[float]:
        """This run's measured seconds per epoch; within its first epoch, the heartbeat's pace."""
        times = [r["epoch_s"] for r in run.records if "epoch_s" in r]
        if times:
            return sum(times) / len(times)
        within = self._within(run)
        if within >= 0.05 and run.beat.get("elapsed"):
            return run.beat["elapsed"] / within
        return None

    def eta(self) -> Optional[float]:
        """Seconds to the end: the running runs' remaining epochs at their own pace, the queued runs' at the
        mean pace measured so far, spread over the jobs (never less than the longest running run's rest)."""
        paces = {rid: self._epoch_seconds(r) for rid, r in self.runs.items()
                 if r.slot is not None or r.records}
        known = [p for p in paces.values() if p is not None]
        if not known:
            return None
        mean = sum(known) / len(known)
        longest = work = 0.0
        for rid, run in self.runs.items():
            if run.slot is not None:
                done = (run.records[-1]["epoch"] if run.records else 0) + self._within(run)
                rest = max(0.0, run.epochs - done) * (paces[rid] or mean)
                longest, work = max(longest, rest), work + rest
            elif run.outcome is None:
                work += run.epochs * mean
        return max(longest, work / self.jobs)

    # ---- the poller ----
    def __enter__(self) -> "SweepProgress":
        if self.board.enabled:
            self._thread = threading.Thread(target=self._loop, name="sweep-progress", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.poll()
            except Exception as exc:  # a display problem must never stop a sweep
                self.board.print(f"(progress display stopped: {type(exc).__name__}: {exc})")
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.board.close()


__all__ = ["Board", "DEFAULT_INTERVAL", "INTERVAL_ENV", "SweepProgress", "clock",
           "is_terminal", "log_interval"]
