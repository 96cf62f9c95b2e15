"""The environment of the child processes tests start (`python -m sebench ...`, `python -c ...`)."""

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child_env(**extra: str) -> dict:
    """This checkout first on PYTHONPATH, the caller's entries kept after it (packages installed with
    `pip --target` and found through PYTHONPATH, as on the GPU machine, must stay visible), plus `extra`."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, **extra}
