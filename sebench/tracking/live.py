"""LiveMirror: the W&B side of a sweep, kept by the sweep's parent process (`sebench run --wandb`)."""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sebench.store import RunDir
from sebench.tracking import core, runs
from sebench.tracking.core import _abandon, _finish, _import_wandb, _read_json, _warn_once


@dataclass
class _Watch:
    since: float  # when the runner handed the run to a worker
    fresh: bool  # no checkpoint then: the run trains from epoch 1, older epoch records are discarded
    live: Optional[runs._Open] = None
    broken: bool = False


class LiveMirror:
    """The W&B side of a sweep (`sebench run --wandb`), kept by the sweep's parent process. The runner calls
    on_start(run_dir) when it hands a run to a worker, on_end(run_dir, outcome) when the run ends, and close()
    at the end of the sweep (or uses it as a context manager).

    While a run trains, a background thread reads its metrics.jsonl every `poll` seconds (as the progress
    display does) and logs each new epoch to the run's W&B run: training processes do nothing for W&B. The
    W&B run opens once the run's lock shows that one of this sweep's workers holds it (not another runner's)
    and its config.yaml is written. At the end mirror_run completes it (summary, histograms); a run that
    another runner finished, or one adopted from another experiment, is mirrored whole. At close, when the
    sweep finished a run and the spec's table in this profile is now complete, mirror_table logs its paired
    deltas. All W&B work runs on that one thread, so a slow or failing W&B never holds up the sweep; close()
    waits for it at most `timeout` seconds. Disabled (`enabled=False`), every method does nothing."""

    def __init__(self, spec=None, profile: Optional[str] = None, results: Optional[str | os.PathLike] = None, *,
                 enabled: bool = True, project: str = "sebench", mode: Optional[str] = None,
                 dir: Optional[str | os.PathLike] = None, entity: Optional[str] = None, poll: float = 2.0,
                 timeout: float = 300.0):
        self.enabled = enabled
        self.spec, self.profile, self.results = spec, profile, results
        self.where = dict(project=project, mode=mode, dir=dir, entity=entity)
        self.poll_s, self.timeout = poll, timeout
        self._events: queue.Queue = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._watch: dict[Path, _Watch] = {}  # the thread's own
        self._arms: Optional[dict[str, int]] = None
        self._changed = False
        self._closed = False

    # ---- the runner's calls (its thread) ----
    def on_start(self, run_dir: str | os.PathLike) -> None:
        if self.enabled:
            run_dir = Path(run_dir)
            fresh = not any((run_dir / "ckpt").glob("*.pt"))  # decided now, before the worker starts
            self._put(("start", run_dir, time.time(), fresh))

    def on_end(self, run_dir: str | os.PathLike, outcome: str) -> None:
        if self.enabled:
            self._put(("end", Path(run_dir), outcome))

    def close(self) -> None:
        if not self.enabled or self._closed:
            return
        self._closed = True
        if self._thread is None:
            return
        self._events.put(("stop",))
        self._thread.join(self.timeout)
        if self._thread.is_alive():
            _warn_once(f"W&B was still busy {self.timeout:.0f} s after the sweep ended: the W&B records of its "
                       f"last runs may be incomplete")

    def __enter__(self) -> "LiveMirror":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _put(self, event: tuple) -> None:
        if self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="wandb-live", daemon=True)
            self._thread.start()
        self._events.put(event)

    # ---- the background thread ----
    def _loop(self) -> None:
        last_poll = time.monotonic()
        while True:
            try:
                event = self._events.get(timeout=self.poll_s)
            except queue.Empty:
                event = None
            stop = event is not None and event[0] == "stop"
            try:
                if event is not None:
                    getattr(self, f"_{event[0]}")(*event[1:])
                if not stop and time.monotonic() - last_poll >= self.poll_s:
                    last_poll = time.monotonic()
                    self._poll()
            except Exception as exc:  # never let one bad record end live logging for the sweep
                _warn_once(f"live logging failed ({type(exc).__name__}: {exc})")
            if stop:
                return

    def _start(self, run_dir: Path, since: float, fresh: bool) -> None:
        self._watch[run_dir] = _Watch(since, fresh)

    def _ours(self, run_dir: Path, since: float) -> bool:
        lock = _read_json(RunDir(run_dir).lock)
        return lock.get("host") == socket.gethostname() and float(lock.get("since") or 0) >= since - 1.0

    def _poll(self) -> None:
        for run_dir, w in self._watch.items():
            if w.broken or core._disabled is not None:
                continue
            try:
                if w.live is None:
                    if not (self._ours(run_dir, w.since) and (run_dir / "config.yaml").is_file()):
                        continue
                    wandb = _import_wandb()
                    w.live = wandb and runs._open(wandb, run_dir, **self.where, arm_index=self._arm_index(run_dir))
                    if w.live is None:
                        w.broken = True
                        continue
                    w.live.since = w.since if w.fresh else None
                runs._log_epochs(w.live)
            except Exception as exc:
                w.broken = True
                _abandon(w.live.run if w.live else None, f"live logging of {run_dir} failed "
                                                         f"({type(exc).__name__}: {exc})")
                w.live = None

    def _end(self, run_dir: Path, outcome: str) -> None:
        w = self._watch.pop(run_dir, None)
        live = w.live if w else None
        if outcome in ("finished", "failed", "reused"):
            self._changed = self._changed or outcome != "failed"
            runs.mirror_run(run_dir, **self.where, arm_index=self._arm_index(run_dir), _live=live)
        if live is not None and live.run in core._open_runs:  # skipped or locked (another runner's to mirror)
            _abandon(live.run, None, exit_code=0)

    def _stop(self) -> None:
        wandb = _import_wandb()
        for run_dir, w in list(self._watch.items()):  # the sweep stopped (interrupted) with these running
            if w.live is not None:
                try:
                    _finish(wandb, w.live.run, exit_code=1)
                except Exception as exc:
                    _abandon(w.live.run, f"closing the W&B run of {run_dir} failed ({type(exc).__name__}: {exc})")
        self._watch.clear()
        if self._changed and self.spec is not None and self.profile and self.results is not None:
            runs.mirror_table(self.spec, self.profile, self.results, **self.where)

    def _arm_index(self, run_dir: Path) -> Optional[int]:
        """The arm's position in the spec's table order ("arm_index", the x axis of per-arm scatter plots)."""
        if self._arms is None:
            self._arms = {}
            if self.spec is not None and self.profile:
                from sebench.spec import expand

                for rc in expand(self.spec, self.profile)[0]:
                    self._arms.setdefault(runs.arm_text(rc.labels), len(self._arms))
        import yaml

        try:
            labels = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("labels") or {}
        except (OSError, yaml.YAMLError):
            return None
        return self._arms.get(runs.arm_text(labels))
