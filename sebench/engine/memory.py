"""Will a run fit in memory? Checked before anything is launched (`sebench plan` and `run`), so a setting
such as `--set data.image_size=100000` ends in one line instead of an allocation of hundreds of GB.

The estimate per run: the input batch, plus the activations autograd keeps for the backward pass (the
outputs of every leaf module, measured by one batch-1 forward at a small probe size and scaled by the
pixel count to the run's size), plus weights, gradients and optimiser state. It is a rough upper bound
(in-place ReLUs are counted, allocator slack is not), compared with the memory available now times a
margin; `--max-memory GB` sets the budget instead, `--ignore-memory-check` skips the check.
"""

from __future__ import annotations

import json
from typing import Optional

import torch

from sebench.engine.builders import build_run_model, device_kind
from sebench.errors import UserError
from sebench.spec import RunConfig

MARGIN = 0.8  # of the available memory: the rest is the allocator's, the data's and other processes'
_ACTIVATIONS: dict[str, tuple[int, int, int]] = {}  # model key -> (probe side, activation elements, params)


def _measure(rc: RunConfig, num_classes: int, probe: int) -> tuple[int, int]:
    """(activation elements of one image at probe x probe, parameter count) of the run's model."""
    model = build_run_model(rc, num_classes).eval()
    total = [0]

    def count(_module, _inputs, output):
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                total[0] += t.numel()

    hooks = [m.register_forward_hook(count) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, probe, probe))
    finally:
        for h in hooks:
            h.remove()
    return total[0], sum(p.numel() for p in model.parameters())


def run_bytes(rc: RunConfig) -> int:
    """Peak bytes one training step of `rc` needs (fp32; autocast halves some of it: not counted)."""
    from sebench.data import get_info

    info = get_info(rc.data.name)
    size = rc.data.image_size or info.image_size
    probe = min(size, info.image_size)  # the native size: cheap, and every zoo model accepts it
    key = json.dumps([rc.model.model_dump(mode="json"), probe, info.num_classes], sort_keys=True)
    if key not in _ACTIVATIONS:
        _ACTIVATIONS[key] = (probe, *_measure(rc, info.num_classes or 1000, probe))
    probe, act, params = _ACTIVATIONS[key]
    act_at_size = act * (size / probe) ** 2
    train = rc.batch_size * (3 * size * size + act_at_size)
    evaluation = rc.eval_batch_size * 3 * size * size  # no graph kept: its input batch dominates
    return int(4 * (max(train, evaluation) + 4 * params))  # weights, grads, momentum, a spare copy


def available_bytes(device: str) -> Optional[int]:
    """Free memory of the device a run uses: MemAvailable of /proc/meminfo for the CPU, the free memory
    of the GPU for CUDA; None where it cannot be known (then nothing is checked)."""
    if device_kind(device).startswith("cuda"):
        try:
            return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None
        except RuntimeError:
            return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def check_memory(runs: list[RunConfig], *, jobs: int = 1, device: str = "auto",
                 max_memory_gb: Optional[float] = None, where: str = "spec") -> None:
    """UserError naming the largest run when `jobs` runs at once would not fit in the budget
    (`max_memory_gb`, else MARGIN of what is available now)."""
    if not runs:
        return
    if max_memory_gb is not None and max_memory_gb <= 0:
        raise UserError("--max-memory must be a positive number of GB", where="--max-memory", fix="e.g. --max-memory 16")
    budget = max_memory_gb * 2**30 if max_memory_gb is not None else available_bytes(device)
    if budget is None:
        return
    if max_memory_gb is None:
        budget *= MARGIN
    need, rc = max(((run_bytes(rc), rc) for rc in runs), key=lambda t: t[0])
    gpus = device_kind(device).startswith("cuda")
    total = need if gpus else need * max(1, jobs)  # CPU jobs share the memory; each GPU job has its own
    if total > budget:
        at = f" x {jobs} jobs" if total != need else ""
        size = rc.data.image_size or "native"
        raise UserError(f"run {rc.run_id} ({rc.model.name}, batch {rc.batch_size}, image size {size}) needs about "
                        f"{gib(need)}{at}, more than the {gib(budget)} "
                        + ("given by --max-memory" if max_memory_gb is not None else
                           f"this machine can spare ({int(MARGIN * 100)}% of the {gib(budget / MARGIN)} available)"),
                        where=where, field="data.image_size / batch_size",
                        fix="use a smaller image size or batch" + (", or fewer --jobs" if at else "")
                            + "; --max-memory GB sets the budget, --ignore-memory-check skips this check")
