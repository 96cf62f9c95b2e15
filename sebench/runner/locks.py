"""One runner per run: the lock file in each run directory.

A lock is created atomically with its content (a hard link), so two runners started on the same spec never
execute the same run twice; a lock left by a dead process on this host, or by an earlier attempt of the
same SLURM job (requeued after preemption), is taken over. Checking and taking over happen under an flock
of the run directory, so two runners on one host cannot both take over the same stale lock.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from sebench.store import LOCK_NAME


def _job_id() -> Optional[str]:
    """The scheduler job this process belongs to (SLURM keeps the id when it requeues a job)."""
    return os.environ.get("SLURM_JOB_ID") or None


def _read_lock(directory: Path) -> Optional[dict]:
    try:
        holder = json.loads((directory / LOCK_NAME).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


def lock_holder_alive(directory: Path) -> bool:
    holder = _read_lock(directory)
    if holder is None:
        return False  # written atomically, so unreadable means damaged, not half-written
    job = _job_id()
    if job is not None and holder.get("job") == job and holder.get("pid") != os.getpid():
        return False  # an earlier attempt of this very SLURM job (preempted, now requeued)
    if holder.get("host") != socket.gethostname():
        return True  # another machine's process: trust its lock (remove it by hand if that job died)
    try:
        os.kill(int(holder["pid"]), 0)
    except (ProcessLookupError, ValueError, KeyError, TypeError, OverflowError):
        return False
    except PermissionError:
        return True
    return True


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
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                         "job": _job_id()})
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
    lock = directory / LOCK_NAME
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
    (directory / LOCK_NAME).unlink(missing_ok=True)
