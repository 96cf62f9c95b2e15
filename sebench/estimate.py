"""What a run will cost before it runs: `sebench plan`'s time estimates.

Three sources, the better first:
1. what runs of the same recipe (seed aside) really took on this device model (measured_seconds);
2. what runs of other recipes took here with the same data, batch, precision, memory layout and threads,
   scaled to this run's epochs and, for another network, its multiply-adds (scaled_seconds): ResNet-56 from
   ResNet-20's runs, 40 epochs from 12;
3. a calibrated guess (estimate_seconds): the model's multiply-adds (with its SE and its SE surgery, as the
   run builds it) times the images an epoch sees, over a training rate measured once per process on a
   CIFAR ResNet-20, on whatever cores are free at that moment (several times too long beside a sweep).
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


def finished_here(rows: list, device: str = "auto") -> list:
    """(RunConfig, RunSummary, env threads) of every finished run in the stores of these rows (every
    experiment folder of results/runs) that trained on this device model, adopted copies (`reused_from`) left
    out: their time is their source's. One scan, which measured_seconds and scaled_seconds share."""
    from sebench.bench import device_name

    roots = {row.directory.parent.parent for row in rows}
    folders = {f for root in roots if root.is_dir() for f in root.iterdir() if f.is_dir()}
    return list(_finished_here(folders, device_name(device_kind(device))))


def measured_seconds(rows: list, device: str = "auto", finished: Optional[list] = None
                     ) -> dict[str, tuple[float, int]]:
    """{run_id: (median wall_s, n)} for each row whose recipe, seed aside, has n finished runs that trained on
    this device model (env.json device_name; `finished`: finished_here's scan, made here if not given). What a
    run really took here, at the threads and beside whatever load it had, where the calibration guesses from a
    few seconds of steps on the cores free at that moment. Runs adopted from another experiment
    (`reused_from`) are left out."""
    import statistics

    def recipe(rc: RunConfig) -> str:  # the experiment name included: a recipe's own seeds only
        return json.dumps({k: v for k, v in rc.identity().items() if k != "seed"}, sort_keys=True)

    walls: dict[str, list[float]] = {}
    for cfg, summary, _ in finished_here(rows, device) if finished is None else finished:
        walls.setdefault(recipe(cfg), []).append(float(summary.wall_s))
    return {row.run.run_id: (statistics.median(w), len(w)) for row in rows if (w := walls.get(recipe(row.run)))}


def _finished_here(folders, here: str):
    """(RunConfig, RunSummary, env threads) of every finished run in these experiment folders
    (results/runs/<experiment>) that trained on the device model `here`, adopted copies (`reused_from`) left
    out: their time is their source's."""
    from sebench.store import read_finished_run

    for d in sorted(p for folder in folders for p in folder.glob("*/summary.json")):
        try:
            cfg, _, summary, _ = read_finished_run(d.parent)
            env = json.loads(RunDir(d.parent).env.read_text())
        except (UserError, OSError, json.JSONDecodeError):
            continue  # unfinished, damaged or foreign: no measurement
        wall = summary.wall_s
        if isinstance(wall, (int, float)) and wall > 0 and not summary.reused_from \
                and env.get("device_name") == here:
            yield cfg, summary, env.get("threads")


def _setting(rc: RunConfig, threads) -> str:
    """What an epoch's time depends on besides the network: the data (set, subset, size, augmentation),
    batch sizes, precision, memory layout and CPU threads."""
    return json.dumps([rc.data.model_dump(mode="json"), rc.batch_size, rc.eval_batch_size, rc.amp,
                       rc.channels_last, threads], sort_keys=True)


def scaled_seconds(rows: list, device: str = "auto", skip=(), finished: Optional[list] = None
                   ) -> dict[str, tuple[float, int, str]]:
    """{run_id: (seconds, n, basis)} for each row (except those in `skip`) with finished runs of another
    recipe on this device model in the same setting (_setting: data, batches, precision, memory layout,
    threads; a row without threads set runs on every core this process may use; `finished`: finished_here's
    scan, made here if not given). Basis "epochs": runs of the same network (model config equal: SE and
    surgery included), their median seconds per epoch times this row's epochs. Basis "flops": runs of other
    networks, their median seconds per epoch and multiply-add times this row's. Time per multiply-add is not
    constant across networks (SE adds little arithmetic but several passes over its activations), so "flops"
    is the rougher of the two; both keep the load the runs had."""
    import statistics

    from sebench.engine.env import available_cpus

    device = device_kind(device)
    todo = [row for row in rows if row.run.run_id not in skip]
    if not todo:
        return {}
    cpu = device == "cpu"  # threads matter on a CPU only
    per_setting: dict[str, list] = {}
    for cfg, summary, threads in finished_here(todo, device) if finished is None else finished:
        per_setting.setdefault(_setting(cfg, threads if cpu else None), []).append((cfg, summary))
    out = {}
    for row in todo:
        threads = (row.run.execution.threads or available_cpus()) if cpu else None  # as fit sets them
        found = per_setting.get(_setting(row.run, threads), [])
        model = row.run.model.model_dump(mode="json")
        same = [s.wall_s / s.epochs for c, s in found if c.model.model_dump(mode="json") == model and s.epochs]
        if same:
            out[row.run.run_id] = (statistics.median(same) * row.run.epochs, len(same), "epochs")
            continue
        per_mac = [s.wall_s / (s.epochs * s.flops) for c, s in found if s.epochs and s.flops]
        if per_mac:
            out[row.run.run_id] = (statistics.median(per_mac) * row.run.epochs * _macs(row.run), len(per_mac),
                                   "flops")
    return out


def _macs(rc: RunConfig) -> int:
    """Multiply-adds per image of the run's network (SE and surgery included, as the run builds it) at its
    input size."""
    from sebench.bench import count_flops
    from sebench.data import get_info

    info = get_info(rc.data.name)
    size = rc.data.image_size or info.image_size
    key = json.dumps([rc.model.model_dump(mode="json"), size, info.num_classes], sort_keys=True)
    if key not in _FLOPS:
        _FLOPS[key] = count_flops(build_run_model(rc, info.num_classes), (3, size, size))
    return _FLOPS[key]


def estimate_seconds(rc: RunConfig, device: str = "auto") -> Optional[float]:
    """Rough time for a run: epochs x (train images x model MACs / measured training rate, plus the test
    pass at a third of the training cost per image). None when the data set's size is not fixed."""
    from sebench.data import get_info

    device = device_kind(device)
    info = get_info(rc.data.name)
    if info.splits is None:
        return None
    n_train = min(info.splits[0], rc.data.train_subset or info.splits[0])
    n_test = min(info.splits[1], rc.data.test_subset or info.splits[1])
    per_epoch = (n_train + n_test / 3) * _macs(rc) / _training_rate(device)
    return rc.epochs * per_epoch


