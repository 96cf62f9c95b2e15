"""One runner per run: the lock file in each run directory.

A lock is created atomically with its content (a hard link), so two runners started on the same spec never
execute the same run twice. It records the holder's host, pid, process start time (/proc/PID/stat) and
boot id: the holder is alive only if the host matches and that pid still runs with the same start time in
the same boot. A lock left by a dead process (or a pid reused since, or a reboot), or by an earlier attempt
of the same SLURM job (requeued after preemption), is stale and taken over; another host's lock is kept
and reported, never broken from here. Checking and taking over happen under an flock
of the run directory, so two runners on one host cannot both take over the same stale lock.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sebench.store import LOCK_NAME, RunDir


def _job_id() -> Optional[str]:
    """The scheduler job this process belongs to (SLURM keeps the id when it requeues a job)."""
    return os.environ.get("SLURM_JOB_ID") or None


def _read_lock(directory: Path) -> Optional[dict]:
    try:
        holder = json.loads(RunDir(directory).lock.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def _start_time(pid: int) -> Optional[int]:
    """When process `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat); None where
    there is no /proc or no such process. A pid and its start time together name one process: a pid that
    the kernel gave to another process since has another start time."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])  # fields after the command name start at field 3
    except (OSError, ValueError, IndexError, TypeError, OverflowError):
        return None


def _boot_id() -> Optional[str]:
    """This boot of this machine (Linux): differs after a reboot and between machines with one hostname."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


@dataclass
class LockState:
    """Who holds a run's lock: 'none' (no lock), 'alive' (a running process of this machine), 'stale' (its
    process is gone: taken over, with `reason`) or 'foreign' (another host's: cannot be checked from here)."""

    state: str
    holder: Optional[dict] = None
    reason: str = ""

    def describe(self, directory: Path) -> str:
        h = self.holder or {}
        since = time.strftime("%Y-%m-%d %H:%M", time.localtime(h["since"])) if isinstance(
            h.get("since"), (int, float)) else "?"
        return f"{RunDir(directory).lock}: pid {h.get('pid')} on {h.get('host')} since {since}"


def lock_state(directory: Path) -> LockState:
    if not RunDir(directory).lock.exists():
        return LockState("none")
    holder = _read_lock(directory)
    if holder is None:  # written atomically, so unreadable means damaged, not half-written
        return LockState("stale", None, "the lock file is unreadable")
    job = _job_id()
    if job is not None and holder.get("job") == job and holder.get("pid") != os.getpid():
        return LockState("stale", holder, f"an earlier attempt of SLURM job {job}")
    if holder.get("host") != socket.gethostname():
        return LockState("foreign", holder, "held by another host, whose processes cannot be checked from here")
    boot = holder.get("boot")
    if boot is not None and boot != _boot_id():
        return LockState("stale", holder, "written before a reboot, or on another machine of the same name")
    try:
        pid = int(holder["pid"])
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError, KeyError, TypeError, OverflowError):
        return LockState("stale", holder, f"process {holder.get('pid')} is gone")
    except PermissionError:
        pass  # it exists, under another user
    start = holder.get("start")
    if start is not None and _start_time(pid) not in (None, start):
        return LockState("stale", holder, f"pid {pid} now belongs to another process (its start time differs)")
    return LockState("alive", holder)


def lock_holder_alive(directory: Path) -> bool:
    """Whether the lock holds: a live process of this machine, or another host's (not ours to break)."""
    return lock_state(directory).state in ("alive", "foreign")


def break_stale_lock(directory: Path) -> Optional[str]:
    """Remove the run's lock if it is stale; returns the message saying whose and why (None otherwise)."""
    if not RunDir(directory).lock.exists():
        return None
    with _directory_flock(directory):
        st = lock_state(directory)
        if st.state != "stale":
            return None
        RunDir(directory).lock.unlink(missing_ok=True)
    return f"stale lock broken: {st.describe(directory)} ({st.reason})"


@contextmanager
def _directory_flock(directory: Path):
    """Serialise lock decisions about one run directory among the processes of this host."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic link below still prevents double creation
        yield
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # e.g. NFS, which emulates flock with write locks: do without (see acquire_lock)
            pass
        yield
    finally:
        os.close(fd)  # releases the flock


def _create_lock(lock: Path) -> bool:
    """Create `lock` with its content in one step (False when it exists): written to a temp file, then
    hard-linked into place, so no reader ever sees an empty lock file."""
    # start + boot tell this process from a later one that reuses its pid, and this boot from another
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                         "job": _job_id(), "start": _start_time(os.getpid()), "boot": _boot_id()})
    tmp = lock.with_name(f"{LOCK_NAME}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(record)
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create, then write
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(record)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def acquire_lock(directory: Path) -> bool:
    """Take the run's lock; False when a live process holds it. A stale lock (dead pid on this host,
    or an earlier attempt of this SLURM job) is taken over."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = RunDir(directory).lock
    with _directory_flock(directory):
        for _ in range(2):
            if _create_lock(lock):
                return True
            if lock_holder_alive(directory):
                return False
            lock.unlink(missing_ok=True)  # stale; a runner on another host may still win the retry
    return False


def release_lock(directory: Path) -> None:
    """Remove the run's lock if this process holds it (never another runner's)."""
    holder = _read_lock(directory)
    if holder is not None and (holder.get("pid"), holder.get("host")) != (os.getpid(), socket.gethostname()):
        return
    RunDir(directory).lock.unlink(missing_ok=True)
