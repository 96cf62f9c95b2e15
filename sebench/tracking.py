"""Optional Weights & Biases mirror of what the store records. The store stays the single source of truth:
this reads finished run directories and report files and copies them to W&B; it never trains or measures.

    mirror_run(run_dir, project="sebench", mode=None, dir=None, entity=None) -> Path | None
    mirror_report(profile, tables, plots, project="sebench", mode=None, dir=None, entity=None) -> Path | None
    sync_offline(dir="wandb") -> list[Path]          # `sebench wandb-sync`
    read_transaction_log(path) -> [Record]           # what an offline run holds (tests, debugging)

- wandb is imported only inside these functions (`pip install sebench[wandb]`).
- Mode: `mode` when given, else $WANDB_MODE, else "online" when an API key is set ($WANDB_API_KEY or a netrc
  entry for the W&B host) and "offline" when none is: offline runs are uploaded later by `sebench wandb-sync`.
- Where: W&B writes under `<dir>/wandb/`. The default `dir` is the results root's parent, so the runs land in
  `wandb/` beside `results/` (git-ignored).
- A W&B failure of any kind (not installed, init refused, a bad record) warns once per process and returns
  None; it never stops a run. After an import or init failure, later calls return None at once.
- The API key is never passed, logged or written by this module: values equal to it are redacted before
  anything is logged, and W&B reads the key from its own environment/netrc.
"""

from __future__ import annotations

import json
import netrc
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable, Optional
from urllib.parse import urlparse

DEFAULT_BASE_URL = "https://api.wandb.ai"

_warned = False
_disabled: Optional[str] = None  # why W&B cannot work in this process (import or init failed)


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
                          reinit="create_new")


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
        return wandb.init(settings=_settings(wandb), **kwargs)
    except Exception as exc:
        _disable(f"wandb.init failed ({type(exc).__name__}: {exc})")
        return None


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
    0.31's finish() can return before the log is written; with no other run active, shutting W&B's service
    down flushes it, else wait for the log's exit record."""
    import time

    local = Path(run.dir).parent
    run.finish(exit_code=exit_code)
    if wandb.run is None:
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


def _read_run(run_dir: Path) -> tuple[dict, dict, dict, list[dict]]:
    import yaml

    from sebench.records import RunSummary
    from sebench.store import RunDir, read_jsonl

    run = RunDir(run_dir)
    summary = RunSummary.read(run.summary).to_json()  # checked against the schema; mirrored as a mapping
    config = (yaml.safe_load(run.config.read_text()) or {}) if run.config.exists() else {}
    env = json.loads(run.env.read_text()) if run.env.exists() else {}
    return summary, config, env, read_jsonl(run.metrics)


def _abandon(run, message: str) -> None:
    """Warn (once) and close a half-made W&B run as failed; never raises."""
    _warn_once(message)
    if run is not None:
        try:
            run.finish(exit_code=1)
        except Exception:
            pass


def mirror_run(run_dir: str | os.PathLike, project: str = "sebench", mode: Optional[str] = None,
               dir: Optional[str | os.PathLike] = None, entity: Optional[str] = None) -> Optional[Path]:
    """Mirror one run directory of the store (results/runs/<experiment>/<run_id>) to a W&B run.

    config = config.yaml flattened ("model.se.reduction") plus env.json under "env."; group = experiment;
    tags = [profile, "axis=label"...]; name = run_id and labels; one W&B step per epoch of metrics.jsonl
    (step = epoch); summary = summary.json. Returns the local W&B run folder, or None when W&B is unavailable
    or failed (after one warning per process)."""
    run_dir = Path(run_dir)
    wandb = _import_wandb()
    if wandb is None:
        return None
    try:
        summary, config, env, metrics = _read_run(run_dir)
    except Exception as exc:
        _warn_once(f"cannot read {run_dir} ({type(exc).__name__}: {exc})")
        return None
    secrets = _secrets()
    run_id = summary.get("run_id") or config.get("run_id") or run_dir.name
    labels = summary.get("labels") or config.get("labels") or {}
    label_text = ", ".join(f"{k}={v}" for k, v in labels.items())
    name = f"{run_id} {label_text}".strip() + (f" seed {summary['seed']}" if "seed" in summary else "")
    tags = [str(summary.get("profile") or config.get("profile") or "adhoc")]
    tags += [f"{k}={v}" for k, v in labels.items()]
    if summary.get("status") not in (None, "finished"):
        tags.append(str(summary["status"]))
    tags = [t[:64] for t in tags]  # W&B's limit per tag
    flat = flatten(config)
    flat.update({f"env.{k}": v for k, v in flatten(env).items()})
    results_root = run_dir.resolve().parents[2] if len(run_dir.resolve().parents) > 2 else run_dir.parent
    where = Path(dir) if dir is not None else default_dir(results_root)
    run = None
    try:
        where.mkdir(parents=True, exist_ok=True)
        run = _init(wandb, project=project, entity=entity, dir=str(where), mode=resolve_mode(mode), name=name,
                    group=summary.get("experiment") or config.get("experiment"), job_type="train", tags=tags,
                    config=_redact(flat, secrets))
        if run is None:
            return None
        for rec in metrics:
            if "epoch" not in rec:
                continue
            values = {k: v for k, v in rec.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                      and k != "time"}
            run.log(values, step=int(rec["epoch"]))
        run.summary.update(_redact(flatten(summary), secrets))
        return _finish(wandb, run, exit_code=0 if summary.get("status") == "finished" else 1)
    except Exception as exc:
        _abandon(run, f"mirroring {run_dir} failed ({type(exc).__name__}: {exc})")
        return None


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


# ---- upload of offline runs ---------------------------------------------------------------------------------

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
