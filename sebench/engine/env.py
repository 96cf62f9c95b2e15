"""What a run ran on: versions, git state, hardware, threads. Recorded in env.json beside every run.

Nothing here may fail a run: a missing git, an unreadable /proc or an absent package gives None.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Optional

import torch

from sebench.bench import cpu_flags, cpu_name, device_name

PACKAGES = ("torch", "torchvision", "timm", "numpy")
REPO_ROOT = Path(__file__).resolve().parents[2]


def available_cpus() -> int:
    """Cores this process may use (its affinity mask, which containers and taskset narrow), falling
    back to the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_bf16_flag() -> Optional[str]:
    """The processor feature that gives this CPU native bf16 arithmetic ('amx_bf16' or 'avx512_bf16'),
    or None: without one, bf16 autocast on the CPU is emulated and slower than fp32."""
    checks = (("amx_bf16", "_is_amx_tile_supported"), ("avx512_bf16", "_is_avx512_bf16_supported"))
    for flag, probe in checks:
        fn = getattr(torch.cpu, probe, None)  # private probes of torch.cpu; /proc/cpuinfo below otherwise
        if fn is not None:
            try:
                if fn():
                    return flag
                continue
            except RuntimeError:
                pass
        if flag in cpu_flags():
            return flag
    return None


def emulated_bf16_error(amp: str, device) -> Optional[str]:
    """The one message a timing benchmark stops with where its `--amp bf16` would run emulated (a CPU
    without native bf16: it would time the emulation; the suite's runs refuse it too, builders.resolve_amp),
    else None."""
    if amp == "bf16" and torch.device(device).type == "cpu" and cpu_bf16_flag() is None:
        return ("--amp bf16: this CPU has no native bf16 (no avx512_bf16 or amx_bf16 flag), so bf16 autocast "
                "would be emulated, slower than fp32; drop --amp bf16 here, or run on a CPU with the flag")
    return None


def package_versions() -> dict[str, Optional[str]]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _git(*args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True,
                             timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_state() -> dict:
    """Commit of the sebench checkout and whether tracked files differ from it (None when sebench is not
    a git checkout, e.g. installed into site-packages, where git would report an enclosing repository)."""
    commit = _git("rev-parse", "HEAD") if (REPO_ROOT / ".git").exists() else None
    if not commit:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def collect_env(device: torch.device, threads: int) -> dict:
    """The environment record of this process for `device`, run with `threads` intra-op threads."""
    cuda = device.type == "cuda"
    return {
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git": git_state(),
        "hostname": socket.gethostname(),
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_name(),
        "cpus_available": available_cpus(),
        "threads": threads,
        "cuda": torch.version.cuda if cuda else None,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        "start_time": now_iso(),
    }
