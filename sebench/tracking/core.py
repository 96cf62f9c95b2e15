"""W&B plumbing shared by the mirrors (see sebench/tracking/__init__.py): mode and API key, redaction,
settings, wandb.init/finish of the runs this process holds (several at once in a sweep), the offline
transaction log, and the rule that a W&B failure warns once per process."""

from __future__ import annotations

import json
import netrc
import os
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlparse

DEFAULT_BASE_URL = "https://api.wandb.ai"
FLUSH_S = 2.0  # W&B writes a live run's .wandb file this often (its default, 15 s, lags an epoch of smoke runs)

_warned = False
_disabled: Optional[str] = None  # why W&B cannot work in this process (import or init failed)
_open_runs: set = set()  # W&B runs this module opened and has not finished (several at once in a sweep)
_open_lock = threading.Lock()


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(f"W&B mirroring skipped: {message}", RuntimeWarning, stacklevel=3)


def _disable(message: str) -> None:
    global _disabled
    _disabled = message
    _warn_once(message)


def base_url() -> str:
    return os.environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def _netrc_key(host: str) -> Optional[str]:
    try:
        auth = netrc.netrc(os.environ.get("NETRC") or None).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    return auth[2] if auth and auth[2] else None


def api_key_available() -> bool:
    """Whether W&B would find an API key: $WANDB_API_KEY or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    return _netrc_key(urlparse(base_url()).hostname or "api.wandb.ai") is not None


def resolve_mode(mode: Optional[str] = None) -> str:
    if mode:
        return mode
    env = os.environ.get("WANDB_MODE")
    if env:
        return env
    return "online" if api_key_available() else "offline"


def _secrets() -> list[str]:
    out = [os.environ.get("WANDB_API_KEY") or ""]
    out.append(_netrc_key(urlparse(base_url()).hostname or "api.wandb.ai") or "")
    return [s for s in out if len(s) >= 8]


def _redact(obj: Any, secrets: list[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _redact(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        for s in secrets:
            obj = obj.replace(s, "<redacted>")
    return obj


def flatten(obj: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists stay values."""
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def default_dir(results_root: Path) -> Path:
    """W&B's `dir` for a results root: its parent, so W&B writes to the `wandb/` folder beside it."""
    return Path(results_root).resolve().parent


def _settings(wandb):
    return wandb.Settings(console="off", disable_git=True, disable_code=True, save_code=False,
                          x_disable_stats=True, x_disable_meta=True, x_disable_machine_info=True,
                          x_save_requirements=False, quiet=True, silent=True, init_timeout=60,
                          reinit="create_new", x_transaction_log_flush_interval=FLUSH_S)


def _import_wandb():
    if _disabled is not None:
        return None
    try:
        import wandb
    except Exception as exc:  # ImportError, or a broken install
        _disable(f"wandb cannot be imported ({type(exc).__name__}: {exc}); install it with "
                 "`pip install 'sebench[wandb]'`")
        return None
    return wandb


def _init(wandb, **kwargs):
    try:
        run = wandb.init(settings=_settings(wandb), **kwargs)
    except Exception as exc:
        _disable(f"wandb.init failed ({type(exc).__name__}: {exc})")
        return None
    with _open_lock:
        _open_runs.add(run)
    return run


def read_transaction_log(path: str | os.PathLike) -> list:
    """The protobuf records of a W&B run's transaction log (run-<id>.wandb): a ':W&B' header, then the
    LevelDB log format (32 KiB blocks; each piece has a 7-byte header: crc32, length, type full/first/middle/
    last). An unfinished trailing piece is ignored."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        return []
    pos, block, pieces, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:  # zero padding up to the block's end
            pos += left
            continue
        if pos + 7 + length > len(data):
            break
        body = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            pieces.append(body)
        elif kind == 2:
            pending = body
        elif kind == 3:
            pending += body
        elif kind == 4:
            pieces.append(pending + body)
            pending = b""
    records = []
    for body in pieces:
        rec = pb.Record()
        rec.ParseFromString(body)
        records.append(rec)
    return records


def _finish(wandb, run, exit_code: int = 0, timeout: float = 60.0) -> Path:
    """Finish a run and return its local folder once its transaction log is on disk. In offline mode wandb
    0.31's finish() can return before the log is written; with no other run of ours open, shutting W&B's
    service down flushes it, else wait for the log's exit record. (wandb.run says nothing here: runs made
    with reinit="create_new" are not the global run.)"""
    local = Path(run.dir).parent
    try:
        run.finish(exit_code=exit_code)
    finally:
        with _open_lock:
            _open_runs.discard(run)
            last = not _open_runs
    if last:
        wandb.teardown()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = list(local.glob("run-*.wandb"))
        try:
            if logs and any(r.WhichOneof("record_type") == "exit" for r in read_transaction_log(logs[0])):
                return local
        except Exception:  # a half-written record: look again
            pass
        time.sleep(0.05)
    raise TimeoutError(f"W&B did not write {local} within {timeout:.0f} s")


def _abandon(run, message: Optional[str], exit_code: int = 1) -> None:
    """Warn (once, when there is a message) and close a half-made W&B run (as failed); never raises."""
    if message:
        _warn_once(message)
    if run is not None:
        try:
            run.finish(exit_code=exit_code)
        except Exception:
            pass
        with _open_lock:
            _open_runs.discard(run)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def logged_so_far(where: str | os.PathLike, run_id: str) -> tuple[int, bool]:
    """(last history step, whether excitation histograms were logged) over the local W&B folders of `run_id`
    under <where>/wandb (offline-run-* and run-* alike): where a continuation of that W&B run starts."""
    step, hist = 0, False
    for log in Path(where).glob(f"wandb/*run-*/run-{run_id}.wandb"):
        try:
            records = read_transaction_log(log)
        except Exception:  # a foreign or damaged file: it holds nothing we wrote
            continue
        for rec in records:
            if rec.WhichOneof("record_type") != "history":
                continue
            for item in rec.history.item:
                key = item.key or ".".join(item.nested_key)
                if key == "_step":
                    step = max(step, int(json.loads(item.value_json)))
                hist = hist or key.startswith("excitation/")
    return step, hist
