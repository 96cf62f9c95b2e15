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
(r=16, all stages); timm's ``resnet50`` and ``seresnet50``. Every configuration of a model starts from
the same weights (one build, copied).

sebench's SE models have two more dimensions, execution details that keep the parameters:
``--forms`` (the excitation form, ``sebench.layers.fused``: ``linear``, ``conv1x1``, ``functional``,
``mm``; ``all``; ``default``: the device type's ``DEFAULT_FORM``, the default) and ``--impls`` (``fused``,
the default, and/or ``reference``: the unfused tail, ``x * s``, ``+``, ``relu``; ``--reference`` adds it).
``--exec eager graphs`` (the default) times every model, timm's alike, also as CUDA graphs: the whole
training step (forward, loss, backward, SGD step) and the inference forward each captured once
(``torch.cuda.CUDAGraph``) and replayed, which leaves no host overhead to any of them; on a CPU that mode
is skipped, with a line that says so.

Besides the overhead over the plain counterpart, each sebench SE row gives its time against timm's
seresnet50 in the same mode (paired per repeat, as the overhead), and the summary says which form was
fastest and whether it is at or below timm's overhead.

Usage::

    .venv/bin/python benchmarks/se_overhead.py                      # 224x224, batch 16, CPU
    .venv/bin/python benchmarks/se_overhead.py --device cuda --batch-size 64 --forms all --reference
    .venv/bin/python benchmarks/se_overhead.py --quick              # smoke test (seconds)

The last line is, for channels_last, eager, the fused SE in the device's default form, sebench's
stride_in='3x3' pair and timm's pair::

    sebench SE overhead (amp off): train X.X%, infer Y.Y% (timm: train A.A%, infer B.B%)
"""

from __future__ import annotations

import argparse
import copy
import itertools
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
from sebench.layers import fused  # noqa: E402
from sebench.layers.se import set_se_form, set_se_impl  # noqa: E402
from sebench.models import build_model  # noqa: E402
from sebench.report.stats import median_interval  # noqa: E402


def _sebench(se: bool, stride_in: str):
    return lambda: build_model("resnet50", se="se" if se else None, stride_in=stride_in)


def _timm(name: str):
    def make():
        import timm
        return timm.create_model(name, pretrained=False)
    return make


TIMM_SE = "timm seresnet50"
SUMMARY_MODEL = "sebench se_resnet50 (3x3)"


def model_table() -> dict[str, tuple[str | None, Callable[[], nn.Module], bool]]:
    """name -> (its plain counterpart, or None for a plain model; builder; takes sebench's SE options)."""
    return {
        "sebench resnet50 (3x3)": (None, _sebench(False, "3x3"), False),
        "sebench se_resnet50 (3x3)": ("sebench resnet50 (3x3)", _sebench(True, "3x3"), True),
        "sebench resnet50 (1x1)": (None, _sebench(False, "1x1"), False),
        "sebench se_resnet50 (1x1)": ("sebench resnet50 (1x1)", _sebench(True, "1x1"), True),
        "timm resnet50": (None, _timm("resnet50"), False),
        TIMM_SE: ("timm resnet50", _timm("seresnet50"), False),
    }


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
AMP = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}
NONE = "-"  # the form and impl of a model without sebench's SE


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Config:
    """One model (in one SE form and impl) in one layout and execution mode on one device, with its
    input, labels and optimizer. `graphs`: each step is a captured CUDA graph (see :meth:`prepare`)."""

    def __init__(self, name: str, form: str, impl: str, exe: str, layout: str, model: nn.Module,
                 device: torch.device, batch: int, size: int, amp: torch.dtype | None = None):
        torch.manual_seed(0)
        self.name, self.form, self.impl, self.exe, self.layout = name, form, impl, exe, layout
        self.device, self.amp = device, amp
        if form != NONE:
            set_se_form(model, form)
            set_se_impl(model, impl)
        fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
        self.model = model.to(device=device, memory_format=fmt)
        self.x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=fmt)
        self.y = torch.randint(0, 1000, (batch,), device=device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        self.graphs: dict[str, torch.cuda.CUDAGraph] = {}

    @property
    def key(self) -> tuple:
        return self.name, self.form, self.impl, self.exe, self.layout

    def label(self) -> str:
        bits = [b for b in (self.form, self.impl) if b != NONE] + [self.exe, self.layout]
        return f"{self.name} [{', '.join(bits)}]"

    def autocast(self):
        # CUDA graphs: no autocast weight cache (its casts would be made once, outside the replays)
        return torch.autocast(self.device.type, dtype=self.amp, enabled=self.amp is not None,
                              cache_enabled=self.exe != "graphs")

    def _train(self) -> None:
        self.model.train()
        with self.autocast():
            loss = nn.functional.cross_entropy(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def _infer(self) -> None:
        self.model.eval()
        with torch.inference_mode(), self.autocast():
            self.model(self.x)

    def step(self, mode: str) -> None:
        if self.graphs:
            self.graphs[mode].replay()
        else:
            (self._train if mode == "train" else self._infer)()

    def prepare(self, modes: list[str], warmup: int) -> None:
        """Warm-up (allocator, oneDNN/cuDNN kernel choice); for CUDA graphs then one capture per mode,
        as torch's whole-network example does: warm-up on a side stream, gradients set to None so the
        captured backward allocates them from the graph's pool, the optimizer step inside the graph."""
        if self.exe != "graphs":
            for mode in modes:
                for _ in range(warmup):
                    self.step(mode)
            return
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for mode in modes:
                for _ in range(max(warmup, 3)):
                    self.step(mode)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graphs = {}
        for mode in modes:
            g = torch.cuda.CUDAGraph()
            if mode == "train":
                self.model.train()
                self.opt.zero_grad(set_to_none=True)
                with torch.cuda.graph(g):
                    with self.autocast():
                        loss = nn.functional.cross_entropy(self.model(self.x), self.y)
                    loss.backward()
                    self.opt.step()
            else:
                self.model.eval()
                with torch.cuda.graph(g), torch.no_grad(), self.autocast():
                    self.model(self.x)
            graphs[mode] = g
        self.graphs = graphs
        for mode in modes:
            self.step(mode)

    def timed(self, mode: str, iters: int, clock=time.perf_counter) -> float:
        """Milliseconds per step, averaged over `iters` back-to-back steps."""
        synchronize(self.device)
        start = clock()
        for _ in range(iters):
            self.step(mode)
        synchronize(self.device)
        return 1e3 * (clock() - start) / iters


def resolve_forms(forms: list[str], device: torch.device) -> list[str]:
    """The --forms list as form names: 'all' is every form, 'default' the device type's default."""
    out: list[str] = []
    for f in forms:
        names = fused.FORMS if f == "all" else (
            [fused.DEFAULT_FORM.get(device.type, "linear")] if f == "default" else [f])
        out += [n for n in names if n not in out]
    return out


def build_configs(args, device: torch.device, notes: list[str]) -> list[Config]:
    table = model_table()
    names = [n for n in table if not args.models or any(s in n for s in args.models)]
    names = sorted(set(names) | {table[n][0] for n in names if table[n][0]}, key=list(table).index)
    execs = list(dict.fromkeys(args.exec))
    if device.type != "cuda" and "graphs" in execs:
        execs.remove("graphs")
        notes.append(f"CUDA graphs: skipped on {device.type} (torch.cuda.CUDAGraph needs a CUDA device): "
                     f"eager only")
    if not execs:
        raise SystemExit("se_overhead.py: nothing to time: --exec graphs needs a CUDA device")
    forms = resolve_forms(args.forms, device)
    impls = list(dict.fromkeys(args.impls + (["reference"] if args.reference else [])))
    built: dict[str, nn.Module] = {}  # one build per model: every configuration starts from its weights
    configs = []
    for exe in execs:
        for layout in args.layouts:
            for n in names:
                if n not in built:
                    torch.manual_seed(0)
                    built[n] = table[n][1]()
                variants = itertools.product(forms, impls) if table[n][2] else [(NONE, NONE)]
                for form, impl in variants:
                    configs.append(Config(n, form, impl, exe, layout, copy.deepcopy(built[n]), device,
                                          args.batch_size, args.image_size, AMP[args.amp]))
    return configs


def run(args, notes: list[str] | None = None) -> list[dict]:
    started = time.monotonic()
    device = torch.device(args.device)
    notes = [] if notes is None else notes
    configs = build_configs(args, device, notes)
    table = model_table()
    ready = []
    for c in configs:
        try:
            c.prepare(args.modes, args.warmup)
            ready.append(c)
        except Exception as exc:  # one model that cannot be captured must not cost the others' figures
            if c.exe != "graphs":
                raise
            notes.append(f"CUDA graphs: capture failed for {c.label()}: {type(exc).__name__}: {exc}"[:300])
            print(notes[-1], file=sys.stderr, flush=True)
            c.graphs, c.model, c.opt = {}, None, None
    jobs = [(c, mode) for mode in args.modes for c in ready]  # configs: each plain model, then its SE
    times: dict[tuple, list[float]] = {(*c.key, m): [] for c, m in jobs}
    began = time.monotonic()
    for r in range(args.repeats):
        now = time.monotonic()
        if args.time_limit and r and (now - started) + (now - began) / r > args.time_limit:  # one more
            notes.append(f"time limit ({args.time_limit:.0f} s): stopped after {r} of {args.repeats} repeats")
            print(notes[-1], file=sys.stderr, flush=True)
            break
        order = jobs if r % 2 == 0 else jobs[::-1]  # alternate direction: no config always follows another
        for c, mode in order:
            times[(*c.key, mode)].append(c.timed(mode, args.iters, CLOCKS[args.clock]))
        print(f"repeat {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    if device.type == "cuda":
        notes.append(f"peak CUDA memory: {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    rows = []
    for (name, form, impl, exe, layout, mode), ms in times.items():
        row = {"model": name, "form": form, "impl": impl, "exec": exe, "layout": layout, "mode": mode,
               "amp": args.amp, "ms": statistics.median(ms), "min": min(ms), "max": max(ms),
               "overhead": None, "low": None, "high": None, "vs_timm": None}
        plain = table[name][0]
        base = times.get((plain, NONE, NONE, exe, layout, mode)) if plain else None
        if base:
            row["overhead"], row["low"], row["high"], _ = median_interval(
                [100 * (a / b - 1) for a, b in zip(ms, base)])
        timm = times.get((TIMM_SE, NONE, NONE, exe, layout, mode))
        if table[name][2] and timm:
            row["vs_timm"] = median_interval([100 * (a / b - 1) for a, b in zip(ms, timm)])[0]
        rows.append(row)
    return rows


def print_table(rows: list[dict], args, notes: list[str] = ()) -> None:
    head = ["model", "form", "impl", "exec", "layout", "mode", "median ms", "min..max ms", "overhead %",
            "95% interval", "vs timm SE %"]

    def interval(r):
        if r["overhead"] is None:
            return ""
        return "n/a (< 6 repeats)" if r["low"] is None else f"{r['low']:+.1f}..{r['high']:+.1f}"
    body = [[r["model"], r["form"], r["impl"], r["exec"], r["layout"], r["mode"], f"{r['ms']:.1f}",
             f"{r['min']:.1f}..{r['max']:.1f}", "" if r["overhead"] is None else f"{r['overhead']:+.1f}",
             interval(r), "" if r["vs_timm"] is None else f"{r['vs_timm']:+.1f}"] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i < 6 else '>'}{w}}}" for i, w in enumerate(widths))
    print(f"torch {torch.__version__}, device {device_label(args.device)}, threads {torch.get_num_threads()}, "
          f"{args.clock} clock, amp {args.amp}, "
          f"batch {args.batch_size}, {args.image_size}x{args.image_size}, {args.repeats} repeats x "
          f"{args.iters} iters, warm-up {args.warmup}; overhead: median over repeats of the paired "
          f"ratio SE / plain - 1, with its order-statistic interval; vs timm SE: the same, this model / "
          f"timm seresnet50 in the same mode")
    for line in notes:
        print(line)
    print(fmt.format(*head))
    print(fmt.format(*("-" * w for w in widths)))
    for b in body:
        print(fmt.format(*b))


def device_label(device: str) -> str:
    """The device with its name: the GPU's, or the CPU model and its native-bf16 flag."""
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{device} ({cpu_name() or 'unknown CPU'}; native bf16: {cpu_bf16_flag() or 'none'})"


def _pct(v) -> str:
    return "n/a" if v is None else f"{v:+.1f}%"


def form_lines(rows: list[dict], device_type: str) -> list[str]:
    """Per SE configuration: overhead over plain and time against timm's SE; then, per execution mode,
    layout and impl, the fastest form (smallest train + infer overhead) against timm's overhead."""
    get = {(r["model"], r["form"], r["impl"], r["exec"], r["layout"], r["mode"]): r for r in rows}
    se_keys = list(dict.fromkeys((r["model"], r["form"], r["impl"], r["exec"], r["layout"])
                                 for r in rows if r["form"] != NONE))
    if not se_keys:
        return []
    lines = ["per SE configuration: overhead over its plain model (train, infer); time vs timm seresnet50"]
    for key in se_keys:
        tr, inf = get.get((*key, "train")), get.get((*key, "infer"))
        lines.append(f"  {key[0]} [{', '.join(key[1:])}]: "
                     f"train {_pct(tr and tr['overhead'])}, infer {_pct(inf and inf['overhead'])}; "
                     f"vs timm SE: train {_pct(tr and tr['vs_timm'])}, infer {_pct(inf and inf['vs_timm'])}")
    for exe, layout in dict.fromkeys((k[3], k[4]) for k in se_keys):
        timm = {m: get.get((TIMM_SE, NONE, NONE, exe, layout, m)) for m in ("train", "infer")}
        for model, impl in dict.fromkeys((k[0], k[2]) for k in se_keys if k[3:] == (exe, layout)):
            scored = []
            for form in fused.FORMS:
                o = [get.get((model, form, impl, exe, layout, m)) for m in ("train", "infer")]
                o = [r["overhead"] for r in o if r is not None and r["overhead"] is not None]
                if o:
                    scored.append((sum(o), form))
            if len(scored) < 2:
                continue
            best = min(scored)[1]
            tr, inf = (get.get((model, best, impl, exe, layout, m)) for m in ("train", "infer"))
            t_tr, t_inf = (timm[m] and timm[m]["overhead"] for m in ("train", "infer"))
            ok = [("yes" if a is not None and b is not None and a <= b else "no")
                  for a, b in ((tr and tr["overhead"], t_tr), (inf and inf["overhead"], t_inf))]
            lines.append(f"fastest form of {model} ({impl}, {exe}, {layout}) on {device_type}: {best}: "
                         f"train {_pct(tr and tr['overhead'])} (timm {_pct(t_tr)}), infer "
                         f"{_pct(inf and inf['overhead'])} (timm {_pct(t_inf)}); at or below timm's: "
                         f"train {ok[0]}, infer {ok[1]}; DEFAULT_FORM[{device_type!r}] is "
                         f"{fused.DEFAULT_FORM.get(device_type, 'linear')!r}")
    return lines


def summary_line(rows: list[dict], device_type: str = "cpu") -> str:
    """The pair the README quotes: channels_last, eager, sebench's fused SE in the device's default form."""
    form = fused.DEFAULT_FORM.get(device_type, "linear")
    over = {(r["model"], r["form"], r["impl"], r["exec"], r["layout"], r["mode"]): r["overhead"] for r in rows}

    def get(model, mode, se=True):
        v = over.get((model, *((form, "fused") if se else (NONE, NONE)), "eager", "channels_last", mode))
        return "n/a" if v is None else f"{v:.1f}%"
    return (f"sebench SE overhead (amp {rows[0]['amp']}): train {get(SUMMARY_MODEL, 'train')}, "
            f"infer {get(SUMMARY_MODEL, 'infer')} "
            f"(timm: train {get(TIMM_SE, 'train', False)}, infer {get(TIMM_SE, 'infer', False)})")


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
    p.add_argument("--forms", nargs="+", default=["default"], choices=[*fused.FORMS, "all", "default"],
                   help="sebench SE's excitation forms to time (default: the device type's DEFAULT_FORM)")
    p.add_argument("--impls", nargs="+", default=["fused"], choices=list(fused.IMPLS),
                   help="sebench SE's implementations to time")
    p.add_argument("--reference", action="store_true", help="also time sebench's unfused reference SE")
    p.add_argument("--exec", nargs="+", default=["eager", "graphs"], choices=["eager", "graphs"],
                   help="eager, and/or every model as CUDA graphs (skipped, with a line, off CUDA)")
    p.add_argument("--amp", choices=list(AMP), default="off",
                   help="autocast dtype of every configuration (bf16 on a CPU needs native bf16: refused without)")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="start no repeat that would end more than S seconds after the start (a device "
                        "call's deadline): the figures come from the repeats done, and a line says so")
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
    notes: list[str] = []
    rows = run(args, notes)
    print_table(rows, args, notes)
    for line in form_lines(rows, torch.device(args.device).type):
        print(line)
    print(summary_line(rows, torch.device(args.device).type))
    return 0


if __name__ == "__main__":
    sys.exit(main())
