"""What SE costs in time: SE-ResNet-50 vs ResNet-50, sebench's and timm's, side by side in one run.

For each configuration (model x memory layout x mode) the script times a training step (forward,
cross-entropy, backward, SGD step) and an inference forward (inference_mode) at a fixed batch, after a
warm-up, round-robin over all configurations (so that background load hits them alike; each SE model
right beside its plain counterpart, the direction alternating between repeats).

Overhead = SE model / its plain counterpart - 1, computed per repeat from the two adjacent timings (a
slow spell of the machine then hits both sides of the ratio) and summarised as the median over repeats,
with a distribution-free 95% interval for that median (order statistics; needs >= 6 repeats). On a
noisy 2-core CPU the interval is the honest answer to "is it under the goal?".

Models: sebench's ``resnet50`` with ``stride_in='3x3'`` (torchvision/timm's layout, the same network as
timm's ``resnet50``) and with its default ``'1x1'`` (the paper's Caffe layout), each without and with SE
(r=16, all stages); timm's ``resnet50`` and ``seresnet50``. ``--reference`` adds sebench's SE with the
unfused reference implementation (``x * s``, ``+``, ``relu`` as separate ops).

Usage::

    .venv/bin/python benchmarks/se_overhead.py                      # 224x224, batch 16, CPU
    .venv/bin/python benchmarks/se_overhead.py --device cuda --batch-size 64
    .venv/bin/python benchmarks/se_overhead.py --quick              # smoke test (seconds)

The last line is, for channels_last, sebench's stride_in='3x3' pair and timm's pair::

    sebench SE overhead: train X.X%, infer Y.Y% (timm: train A.A%, infer B.B%)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sebench.bench import cpu_name  # noqa: E402
from sebench.engine.env import cpu_bf16_flag, emulated_bf16_error  # noqa: E402
from sebench.layers.se import set_se_impl  # noqa: E402
from sebench.models import build_model  # noqa: E402
from sebench.report.stats import median_interval  # noqa: E402

def _sebench(se: bool, stride_in: str, impl: str = "fused"):
    def make():
        m = build_model("resnet50", se="se" if se else None, stride_in=stride_in)
        set_se_impl(m, impl)
        return m
    return make


def _timm(name: str):
    def make():
        import timm
        return timm.create_model(name, pretrained=False)
    return make


def model_table(reference: bool) -> dict[str, tuple[str | None, Callable[[], nn.Module]]]:
    """name -> (its plain counterpart, or None for a plain model; builder)."""
    table = {
        "sebench resnet50 (3x3)": (None, _sebench(False, "3x3")),
        "sebench se_resnet50 (3x3)": ("sebench resnet50 (3x3)", _sebench(True, "3x3")),
        "sebench resnet50 (1x1)": (None, _sebench(False, "1x1")),
        "sebench se_resnet50 (1x1)": ("sebench resnet50 (1x1)", _sebench(True, "1x1")),
        "timm resnet50": (None, _timm("resnet50")),
        "timm seresnet50": ("timm resnet50", _timm("seresnet50")),
    }
    if reference:
        table["sebench se_resnet50 (3x3, reference impl)"] = ("sebench resnet50 (3x3)",
                                                             _sebench(True, "3x3", "reference"))
    return table


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
AMP = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Config:
    """One model in one layout on one device, with its input, labels and optimizer."""

    def __init__(self, name: str, make, layout: str, device: torch.device, batch: int, size: int,
                 amp: torch.dtype | None = None):
        torch.manual_seed(0)
        self.name, self.layout, self.device, self.amp = name, layout, device, amp
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        self.model = make().to(device=device, memory_format=fmt)
        self.x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, 1000, (batch,), device=device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def train_step(self) -> None:
        self.model.train()
        with self.autocast():
            loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def infer_step(self) -> None:
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            self.model(self.x)

    def timed(self, mode: str, iters: int, clock=time.perf_counter) -> float:
        """Milliseconds per step, averaged over `iters` back-to-back steps."""
        step = self.train_step if mode == "train" else self.infer_step
        synchronize(self.device)
        start = clock()
        for _ in range(iters):
            step()
        synchronize(self.device)
        return 1e3 * (clock() - start) / iters


def run(args) -> list[dict]:
    device = torch.device(args.device)
    table = model_table(args.reference)
    names = [n for n in table if not args.models or any(s in n for s in args.models)]
    names = sorted(set(names) | {table[n][0] for n in names if table[n][0]}, key=list(table).index)
    configs = [Config(n, table[n][1], layout, device, args.batch_size, args.image_size, AMP[args.amp])
               for layout in args.layouts for n in names]
    jobs = [(c, mode) for mode in args.modes for c in configs]  # configs: each plain model, then its SE
    for c, mode in jobs:  # warm-up (allocator, oneDNN/cuDNN kernel choice)
        for _ in range(args.warmup):
            (c.train_step if mode == "train" else c.infer_step)()
    times: dict[tuple, list[float]] = {(c.name, c.layout, m): [] for c, m in jobs}
    for r in range(args.repeats):
        order = jobs if r % 2 == 0 else jobs[::-1]  # alternate direction: no config always follows another
        for c, mode in order:
            times[(c.name, c.layout, mode)].append(c.timed(mode, args.iters, CLOCKS[args.clock]))
        print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    rows = []
    for (name, layout, mode), ms in times.items():
        row = {"model": name, "layout": layout, "mode": mode, "amp": args.amp, "ms": statistics.median(ms),
               "min": min(ms), "max": max(ms), "overhead": None, "low": None, "high": None}
        plain = table[name][0]
        if plain:
            paired = [100 * (a / b - 1) for a, b in zip(ms, times[(plain, layout, mode)])]
            row["overhead"], row["low"], row["high"], _ = median_interval(paired)
        rows.append(row)
    return rows


def print_table(rows: list[dict], args) -> None:
    head = ["model", "layout", "mode", "median ms", "min..max ms", "overhead %", "95% interval"]

    def interval(r):
        if r["overhead"] is None:
            return ""
        return "n/a (< 6 repeats)" if r["low"] is None else f"{r['low']:+.1f}..{r['high']:+.1f}"
    body = [[r["model"], r["layout"], r["mode"], f"{r['ms']:.1f}", f"{r['min']:.1f}..{r['max']:.1f}",
             "" if r["overhead"] is None else f"{r['overhead']:+.1f}", interval(r)] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
    print(f"torch {torch.__version__}, device {device_label(args.device)}, threads {torch.get_num_threads()}, "
          f"{args.clock} clock, amp {args.amp}, "
          f"batch {args.batch_size}, {args.image_size}x{args.image_size}, {args.repeats} repeats x "
          f"{args.iters} iters, warm-up {args.warmup}; overhead: median over repeats of the paired "
          f"ratio SE / plain - 1, with its order-statistic interval")
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths)))
    for b in body:
        print(fmt.format(*b))


def device_label(device: str) -> str:
    """The device with its name: the GPU's, or the CPU model and its native-bf16 flag."""
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({cpu_name() or 'unknown CPU'}; native bf16: {cpu_bf16_flag() or 'none'})"


def summary_line(rows: list[dict]) -> str:
    over = {(r["model"], r["layout"], r["mode"]): r["overhead"] for r in rows}

    def get(model, mode):
        v = over.get((model, "channels_last", mode))
        return "n/a" if v is None else f"{v:.1f}%"
    return (f"sebench SE overhead (amp {rows[0]['amp']}): train {get('sebench se_resnet50 (3x3)', 'train')}, "
            f"infer {get('sebench se_resnet50 (3x3)', 'infer')} "
            f"(timm: train {get('timm seresnet50', 'train')}, infer {get('timm seresnet50', 'infer')})")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--repeats", type=int, default=5, help="round-robin passes over all configurations")
    p.add_argument("--iters", type=int, default=2, help="steps per configuration per repeat")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (CPU)")
    p.add_argument("--clock", choices=list(CLOCKS), default="wall",
                   help="wall (default) or cpu: process CPU time, for a busy shared CPU machine (use it "
                        "with --threads 1: it leaves out the time other processes hold the cores)")
    p.add_argument("--layouts", nargs="+", default=["nchw", "channels_last"],
                   choices=["nchw", "channels_last"])
    p.add_argument("--modes", nargs="+", default=["train", "infer"], choices=["train", "infer"])
    p.add_argument("--models", nargs="*", help="substrings of model names to keep (plus their plain pairs)")
    p.add_argument("--reference", action="store_true", help="also time sebench's unfused reference SE")
    p.add_argument("--amp", choices=list(AMP), default="off",
                   help="autocast dtype of every configuration (bf16 on a CPU needs native bf16: refused without)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: batch 2, 32x32, 1 repeat, 1 iter, 1 warm-up")
    args = p.parse_args(argv)
    if why := emulated_bf16_error(args.amp, args.device):
        p.error(why)
    if args.quick:
        args.batch_size, args.image_size, args.repeats, args.iters, args.warmup = 2, 32, 1, 1, 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True
        if args.clock == "cpu":
            raise SystemExit("--clock cpu measures host CPU time: use the wall clock on a GPU")
    rows = run(args)
    print_table(rows, args)
    print(summary_line(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
