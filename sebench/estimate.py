"""What a run will cost before it runs: `sebench plan`'s time estimates.

Two sources, the better first: what runs of the same recipe (seed aside) really took on this device model
(measured_seconds, from the store), else a calibrated guess (estimate_seconds): the model's multiply-adds
(with its SE and its SE surgery, as the run builds it) times the images an epoch sees, over a training rate
measured once per process on a CIFAR ResNet-20.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from sebench.engine.builders import build_run_model, device_kind
from sebench.errors import UserError
from sebench.spec import RunConfig
from sebench.store import RunDir


_CALIBRATION: dict[str, float] = {}
_FLOPS: dict[str, int] = {}


def _training_rate(device: str) -> float:
    """Multiply-adds per second this device sustains in training (forward+backward), measured once per
    process on a CIFAR ResNet-20 at batch 64: the estimate's only measured input."""
    if device not in _CALIBRATION:
        from sebench.bench import count_flops, measure_throughput
        from sebench.models import build_model

        model = build_model("resnet20")
        img_s = measure_throughput(model, input_size=(3, 32, 32), batch_size=64, device=device, train=True,
                                   warmup=1, iters=3)["img_s"]
        _CALIBRATION[device] = img_s * count_flops(model, (3, 32, 32))
    return _CALIBRATION[device]


def cpu_busy_note(device: str) -> str:
    """Why a CPU estimate may be too high: the calibration shares the cores with whatever else runs (a sweep
    in the background makes it several times too long). Empty when the CPU was idle or the device is a GPU."""
    if device_kind(device) != "cpu" or not hasattr(os, "getloadavg"):
        return ""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load < 0.5 * cores:
        return ""
    return (f" (measured while the CPU was busy, load {load:.1f} on {cores} cores: too high; "
            f"rerun `sebench plan` on an idle machine)")


def measured_seconds(rows: list, device: str = "auto") -> dict[str, tuple[float, int]]:
    """{run_id: (median wall_s, n)} for each row whose recipe, seed aside, has n finished runs in its store
    folder that trained on this device model (env.json device_name). What a run really took here, at the
    threads and beside whatever load it had, where the calibration guesses from a few seconds of steps on
    the cores free at that moment. Runs adopted from another experiment (`reused_from`) are left out."""
    import statistics

    from sebench.bench import device_name
    from sebench.store import read_finished_run

    here = device_name(device_kind(device))

    def recipe(rc: RunConfig) -> str:
        return json.dumps({k: v for k, v in rc.identity().items() if k != "seed"}, sort_keys=True)

    walls: dict[str, list[float]] = {}
    for folder in {row.directory.parent for row in rows}:
        for d in sorted(folder.glob("*/summary.json")):
            try:
                cfg, _, summary, _ = read_finished_run(d.parent)
                env = json.loads(RunDir(d.parent).env.read_text())
            except (UserError, OSError, json.JSONDecodeError):
                continue  # unfinished, damaged or foreign: no measurement
            wall = summary.wall_s
            if isinstance(wall, (int, float)) and wall > 0 and not summary.reused_from \
                    and env.get("device_name") == here:
                walls.setdefault(recipe(cfg), []).append(float(wall))
    return {row.run.run_id: (statistics.median(w), len(w)) for row in rows if (w := walls.get(recipe(row.run)))}


def estimate_seconds(rc: RunConfig, device: str = "auto") -> Optional[float]:
    """Rough time for a run: epochs x (train images x model MACs / measured training rate, plus the test
    pass at a third of the training cost per image). None when the data set's size is not fixed."""
    from sebench.bench import count_flops
    from sebench.data import get_info

    device = device_kind(device)
    info = get_info(rc.data.name)
    if info.splits is None:
        return None
    n_train = min(info.splits[0], rc.data.train_subset or info.splits[0])
    n_test = min(info.splits[1], rc.data.test_subset or info.splits[1])
    size = rc.data.image_size or info.image_size
    key = json.dumps([rc.model.model_dump(mode="json"), size], sort_keys=True)  # surgery included
    if key not in _FLOPS:
        _FLOPS[key] = count_flops(build_run_model(rc, info.num_classes), (3, size, size))
    per_epoch = (n_train + n_test / 3) * _FLOPS[key] / _training_rate(device)
    return rc.epochs * per_epoch


