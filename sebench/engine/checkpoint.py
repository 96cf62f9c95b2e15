"""End-of-epoch checkpoints that survive SIGKILL, and exact restoration of a run's state.

``ckpt/last.pt`` is replaced atomically after every epoch; the version it replaces becomes
``ckpt/prev.pt`` (by rename), so a checkpoint torn by a crash or a full disk costs one epoch, not the run.
Files hold only tensors and plain Python values (RNG states included), so they load with
``torch.load(weights_only=True)``: loading a checkpoint never runs pickled code.

Data-parallel runs: rank 0 writes the checkpoint (the model and optimizer are the same on every rank)
with every rank's RNG state under ``rng_ranks``; on resume rank 0 picks the file (load_latest) and the
other ranks read that same file (`read`).
"""

from __future__ import annotations

import random
import warnings
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from sebench.errors import UserError
from sebench.store import atomic_open

LAST = "last.pt"
PREV = "prev.pt"
REQUIRED = ("epoch", "run_id", "model", "optimizer", "scheduler", "rng")


def capture_rng() -> dict:
    """Every global RNG a training step may draw from, as tensors and lists."""
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        # Only a process that used CUDA has CUDA streams to save; asking otherwise would initialise it.
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss"]))


def save_checkpoint(ckpt_dir: Path, state: dict) -> Path:
    """Write `state` to ckpt_dir/last.pt atomically, keeping the previous last.pt as prev.pt."""
    path = Path(ckpt_dir) / LAST
    with atomic_open(path, "wb", backup=path.with_name(PREV)) as f:
        torch.save(state, f)
    return path


def read(path: Path) -> Optional[dict]:
    """The checkpoint at `path`, or None (with a warning) if it is unreadable."""
    return _read(Path(path))


def _read(path: Path) -> Optional[dict]:
    """The checkpoint at `path`, or None (with a warning) if it is truncated or otherwise unreadable."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torn zip, bad pickle opcode, disallowed global: all mean unusable
        warnings.warn(f"checkpoint {path} is unreadable ({type(exc).__name__}: {exc}); ignoring it",
                      RuntimeWarning, stacklevel=3)
        return None
    missing = [k for k in REQUIRED if k not in state] if isinstance(state, dict) else list(REQUIRED)
    if missing:
        warnings.warn(f"checkpoint {path} lacks {missing}; ignoring it", RuntimeWarning, stacklevel=3)
        return None
    return state


def load_latest(ckpt_dir: Path, run_id: str) -> Optional[dict]:
    """The newest readable checkpoint (last.pt, else prev.pt) on the CPU, or None if there is none.
    Temp files of writes cut short by a kill are removed: a run directory has one writer at a time
    (the runner's lock).

    A checkpoint of another run (its run_id differs) means the directory is shared by mistake: UserError.
    """
    return latest(ckpt_dir, run_id)[0]


def latest(ckpt_dir: Path, run_id: str) -> tuple[Optional[dict], Optional[Path]]:
    """load_latest's checkpoint and the file it came from ((None, None) when there is none)."""
    ckpt_dir = Path(ckpt_dir)
    for orphan in ckpt_dir.glob(f".{LAST}.*.tmp"):  # a write that a kill interrupted
        orphan.unlink(missing_ok=True)
    candidates = [p for p in (ckpt_dir / LAST, ckpt_dir / PREV) if p.exists()]
    for path in candidates:
        state = _read(path)
        if state is None:
            continue
        if state["run_id"] != run_id:
            raise UserError(f"checkpoint belongs to run {state['run_id']!r}, not {run_id!r}",
                            where=str(path), field="run_id",
                            fix="point the run at its own directory, or delete this checkpoint")
        if path.name == PREV:
            warnings.warn(f"resuming from {path} (epoch {state['epoch']})", RuntimeWarning, stacklevel=3)
        return state, path
    if candidates:
        raise UserError("no readable checkpoint (last.pt and prev.pt are both damaged)", where=str(ckpt_dir),
                        fix="delete the ckpt directory to restart this run from epoch 1")
    return None, None
