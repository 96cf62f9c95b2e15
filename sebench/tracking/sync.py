"""`sebench wandb-sync`: upload offline W&B runs with `wandb sync`, which sends a run's offline folders (a live
sweep's, a resume's, a later mirror's) in order into the one W&B run of their id."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

from sebench.tracking.core import _redact, _secrets, api_key_available, base_url


def offline_runs(dir: str | os.PathLike) -> list[Path]:
    """Offline W&B run folders under `dir` (the wandb/ folder itself, or a folder that holds one)."""
    dir = Path(dir)
    found = sorted(dir.glob("offline-run-*")) + sorted(dir.glob("wandb/offline-run-*"))
    return [p for p in found if p.is_dir() and any(p.glob("run-*.wandb"))]


def _synced(run: Path) -> bool:
    return any(run.glob("run-*.wandb.synced"))


def sync_offline(dir: str | os.PathLike = "wandb", *, include_synced: bool = False, timeout: float = 900,
                 log=print) -> list[Path]:
    """Upload offline runs with `wandb sync`. UserError (one clear line) when there is nothing to upload, no
    API key, no route to the W&B server, or `wandb sync` fails; never a traceback."""
    from sebench.errors import UserError

    runs = offline_runs(dir)
    todo = [r for r in runs if include_synced or not _synced(r)]
    if not runs:
        raise UserError("no offline W&B runs found", where=str(dir),
                        fix="mirror runs first, or pass --dir pointing at the wandb/ folder")
    if not todo:
        log(f"all {len(runs)} offline runs in {dir} are already synced")
        return []
    try:
        import wandb  # noqa: F401  (only to fail early with a clear message)
    except Exception:
        raise UserError("wandb is not installed", where="wandb-sync",
                        fix="pip install 'sebench[wandb]'") from None
    if not api_key_available():
        raise UserError("no W&B API key", where="wandb-sync",
                        fix="set WANDB_API_KEY or run `wandb login`, then run `sebench wandb-sync` again") from None
    url = urlparse(base_url())
    host = url.hostname or "api.wandb.ai"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as exc:
        raise UserError(f"cannot reach the W&B server {base_url()} ({exc.strerror or exc})", where="wandb-sync",
                        fix=f"connect to the network and run `sebench wandb-sync` again; the offline runs "
                            f"({len(todo)}) stay in {dir}") from None
    secrets = _secrets()
    try:
        proc = subprocess.run([sys.executable, "-m", "wandb", "sync", *map(str, todo)], capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise UserError(f"`wandb sync` did not finish in {timeout:.0f} s", where="wandb-sync",
                        fix="check the network and run it again") from None
    output = _redact((proc.stdout or "") + (proc.stderr or ""), secrets)
    done = [r for r in todo if _synced(r)]
    if proc.returncode != 0 or len(done) < len(todo):
        last = next((ln.strip() for ln in reversed(output.splitlines()) if ln.strip()), "no output")
        raise UserError(f"`wandb sync` uploaded {len(done)} of {len(todo)} runs: {last}", where="wandb-sync",
                        fix="check the API key and the network, then run `sebench wandb-sync` again")
    for r in done:
        log(f"synced {r}")
    return done
