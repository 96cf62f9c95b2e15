"""`sebench speed`: the training and inference throughput of stored runs' configurations, measured again
side by side in one sitting. Orchestration over the store, beside the runner: it reads finished runs, builds
their models as fit does, times them with sebench.bench, and writes speed.json into each run folder."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Callable, Sequence, Union

import torch

from sebench.bench import device_name, measure_throughput
from sebench.data.registry import get_info
from sebench.engine.env import now_iso
from sebench.engine.builders import build_run_model, resolve_amp
from sebench.progress import Board
from sebench.store import SPEED_FILE, atomic_write_json, read_finished_run


def _signature(cfg, summary) -> str:
    """What a run's speed depends on: its model (with SE and surgery), input and batch sizes, memory
    format and precision; not its seed, data order or epochs."""
    return json.dumps({"model": cfg.model.model_dump(mode="json"), "input_size": summary.input_size,
                       "batch_size": cfg.batch_size, "infer_batch_size": cfg.benchmark.batch_size,
                       "channels_last": cfg.channels_last, "amp": cfg.amp}, sort_keys=True)


def remeasure_runs(run_dirs: Sequence, *, repeats: int, iters: int,
                   device: Union[str, torch.device] = "cpu", warmup: int = 2,
                   log: Callable[[str], None] = print, progress: bool = True) -> list:
    """Training and inference throughput of the configurations behind finished runs, measured again
    here, all in one sitting: each distinct configuration (runs that differ only by seed share one) is
    built fresh (weights do not change the work), warmed up, then timed round-robin over `repeats`
    passes (the direction alternating), `iters` steps per pass, at the run's own training and benchmark
    batch sizes, memory format and precision. Writes ``speed.json`` into every run directory (median
    img/s over the passes, with min and max) and returns those paths.

    Why: a run's own ``train_img_s`` is measured while it trains, often beside other runs on the same
    cores, so the speeds of one table's runs are not comparable; these are. `progress`: a live bar over
    the measurements (sebench.progress), plain lines in a log. `repeats` and `iters` have no default
    here: `sebench speed`'s flags hold them, in one place.
    """
    if repeats < 1 or iters < 1:
        raise ValueError("repeats and iters must be >= 1")
    device = torch.device(device)
    groups: dict[str, list] = {}
    for run_dir in run_dirs:
        cfg, _, summary, _ = read_finished_run(run_dir)
        groups.setdefault(_signature(cfg, summary), []).append((Path(run_dir), cfg, summary))
    configs = []
    for members in groups.values():
        _, cfg, summary = members[0]
        num_classes = cfg.model.num_classes or get_info(cfg.data.name).num_classes or 1000
        amp = resolve_amp(cfg.amp, device)  # the dtype the run trained in (bf16 on a CPU with native bf16)
        configs.append({"members": members, "model": build_run_model(cfg, num_classes),
                        "input_size": tuple(summary.input_size), "channels_last": cfg.channels_last,
                        "amp": amp, "batch": {True: cfg.batch_size, False: cfg.benchmark.batch_size},
                        "img_s": {True: [], False: []},
                        "name": f"{members[0][0].name} ({cfg.model.name}, "
                                f"{'SE surgery' if cfg.model.surgery else summary.se or 'no SE'})"})
    log(f"re-measuring {len(configs)} configuration(s) of {sum(len(g) for g in groups.values())} run(s) on "
        f"{device_name(device)}, {torch.get_num_threads()} thread(s): {repeats} repeats x {iters} steps")
    board = Board("measurements", (repeats + 1) * len(configs) * 2, enabled=progress)
    log = board.above(log)
    with board:
        for r in range(repeats + 1):  # pass 0 only warms up (allocator, oneDNN/cuDNN kernel choice)
            for c in (configs if r % 2 == 0 else configs[::-1]):
                for train in (True, False):
                    board.update(status=f"{'warm-up' if r == 0 else f'repeat {r}/{repeats}'}: {c['name']}, "
                                        f"{'train' if train else 'infer'} at batch {c['batch'][train]}")
                    out = measure_throughput(c["model"], input_size=c["input_size"], batch_size=c["batch"][train],
                                             device=device, train=train, warmup=warmup if r == 0 else 1,
                                             iters=iters, channels_last=c["channels_last"], amp_dtype=c["amp"])
                    board.advance()
                    if r > 0:
                        c["img_s"][train].append(out["img_s"])
            if r > 0:
                log(f"repeat {r}/{repeats} done")
    written = []
    common = {"repeats": repeats, "iters": iters, "configurations": len(configs), "device": str(device),
              "device_name": device_name(device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "time": now_iso(),
              "method": "one sitting, round-robin over the configurations; per repeat, batch size / "
                        "median step time of `iters` steps; median, min and max over the repeats"}
    for c in configs:
        record = dict(common)
        for train, key in ((True, "train"), (False, "infer")):
            values = c["img_s"][train]
            record.update({f"{key}_img_s": statistics.median(values), f"{key}_img_s_min": min(values),
                           f"{key}_img_s_max": max(values), f"{key}_batch_size": c["batch"][train]})
        for run_dir, _, _ in c["members"]:
            atomic_write_json(run_dir / SPEED_FILE, record)
            written.append(run_dir / SPEED_FILE)
        log(f"{c['name']}: train {record['train_img_s']:.1f} img/s, infer {record['infer_img_s']:.1f} img/s")
    return written
