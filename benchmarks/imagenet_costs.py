"""Parameters and FLOPs of every ImageNet row of the SE paper's main tables, ours beside the paper's.

For each row (source 003: ResNet-50/101/152, ResNeXt-50/101, VGG-16, BN-Inception, Inception-ResNet-v2;
MobileNet and ShuffleNet from the lightweight table) the zoo model is built without and with SE (r=16,
the paper's setting; every stage) and counted at its input size. FLOPs are multiply-adds for one image,
the paper's unit (``sebench.bench.count_flops``: torch.utils.flop_counter, conv/matmul only).

Writes ``results/imagenet_costs.md`` and ``results/imagenet_costs.csv``::

    .venv/bin/python benchmarks/imagenet_costs.py [--out results] [--threads N]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sebench.bench import count_flops, count_params  # noqa: E402
from sebench.models import MODELS, build_model  # noqa: E402

# (paper row, zoo entry, paper GFLOPs plain, SE, paper params (M) plain, SE or None, note)
ROWS = [
    ("ResNet-50", "resnet50", 3.86, 3.87, None, None,
     "stride in the first 1x1 of a downsampling bottleneck (the Caffe release the paper counts); "
     "torchvision/timm's 3x3 placement gives 4.09"),
    ("ResNet-101", "resnet101", 7.58, 7.60, None, None, "stride in the first 1x1, as ResNet-50"),
    ("ResNet-152", "resnet152", 11.30, 11.32, None, None, "stride in the first 1x1, as ResNet-50"),
    ("ResNeXt-50", "resnext50_32x4d", 4.24, 4.25, None, None,
     "32x4d, stride in the 3x3 (ResNeXt's own release; the 1x1 placement gives 3.77)"),
    ("ResNeXt-101", "resnext101_32x4d", 7.99, 8.00, None, None, "32x4d, stride in the 3x3"),
    ("VGG-16", "vgg16", 15.47, 15.48, None, None,
     "torchvision vgg16_bn: BN after each conv (the paper trains VGG-16 from scratch with BN); "
     "SE after each of the 13 conv-BN-ReLU"),
    ("BN-Inception", "bn_inception", 2.03, 2.04, None, None,
     "Ioffe & Szegedy (2015) figure 5: two 3x3 for each 5x5, stride-2 modules 3c/4e with pass-through "
     "max pooling, plain 7x7 first conv (the released Caffe model's reading of figure 5's 'convolution*'), "
     "no conv biases under BN; SE on each of the 10 Inception modules' outputs (3c and 4e included)"),
    ("Inception-ResNet-v2", "inception_resnet_v2", 11.75, 11.76, None, None,
     "timm's Inception-ResNet-v2 (TF-slim's released architecture) counted at its 299x299 input; SE on "
     "each residual branch before the scaled addition; see the notes below for the +12%"),
    ("MobileNet", "mobilenet_v1", 0.569, 0.572, 4.2, 4.7,
     "MobileNet v1 1.0 (Howard et al. 2017 table 1, 224); SE after each depthwise-separable block; "
     "paper in MFLOPs"),
    ("ShuffleNet", "shufflenet_v1", 0.140, 0.142, 1.8, 2.4,
     "ShuffleNet v1 1x, g=3 (Zhang et al. 2018 table 1); SE on each unit's residual branch before the "
     "add/concatenation (the reading the paper's +0.6M parameters selects, see the notes); paper in MFLOPs"),
]

# Networks of the source's other tables (no GFLOPs column there): (row, zoo entry, paper params (M), note)
OTHER_ROWS = [
    ("Shake-Shake 26 2x96d (CIFAR-10)", "shake_shake26_2x96d", 26.2,
     "Gastaldi (2017): 26.2M parameters; shake-shake-image; SE on each block's shaken residual before the "
     "addition (12 modules); the SE paper gives no parameter count for it"),
    ("MobileNet, 32x32 stand-in", "mobilenet_v1_cifar", None,
     "quick-profile stand-in for the MobileNet row (stride-1 stem), 10 classes"),
    ("ShuffleNet, 32x32 stand-in", "shufflenet_v1_cifar", None,
     "quick-profile stand-in for the ShuffleNet row (stride-1 stem, no max pool), 10 classes"),
]

HEADER = ["model", "zoo entry", "input", "params (M)", "GFLOPs", "SE params (M)", "SE GFLOPs",
          "paper GFLOPs", "paper SE GFLOPs", "diff GFLOPs", "diff %", "SE diff GFLOPs",
          "paper params (M)", "paper SE params (M)", "params diff %", "note"]
OTHER_HEADER = ["model", "zoo entry", "input", "params (M)", "GFLOPs", "SE params (M)", "SE GFLOPs",
                "paper params (M)", "params diff %", "note"]


def measure(name: str, size=None) -> dict:
    entry = MODELS[name]
    size = tuple(size or entry.input_size)
    out = {"input": f"{size[1]}x{size[2]}"}
    for key, se in (("plain", None), ("se", "se")):
        model = build_model(name, se=se).eval()
        out[f"{key}_params"] = count_params(model) / 1e6
        out[f"{key}_gflops"] = count_flops(model, size) / 1e9
        del model
    return out


def irv2_unpadded_stem() -> tuple[float, float]:
    """GFLOPs of Inception-ResNet-v2 (plain, SE) at 299x299 with the stem's third 3x3 conv (conv2d_2b)
    unpadded, as in an implementation whose convs default to no padding: the grids become 34/16/7
    instead of 35/17/8 (the same as timm's network at a 297x297 input)."""
    out = []
    for se in (None, "se"):
        model = build_model("inception_resnet_v2", se=se).eval()
        model.conv2d_2b.conv.padding = (0, 0)
        out.append(count_flops(model, (3, 299, 299)) / 1e9)
    return out[0], out[1]


def paper_figure15_irv2_gflops() -> float:
    """GFLOPs at 299x299 of Inception-ResNet-v2 as Szegedy et al. (2016) draw it: the Inception-v4 stem
    (figure 3), 5 x Inception-ResNet-A, Reduction-A (k, l, m, n = 256, 256, 384, 384), 10 x B, Reduction-B,
    5 x C (figures 15-19). The residual widths follow the branches that feed them (384, 1152, 2144; the
    figures print 384, 1154, 2048, which cannot be added to their inputs). Counting only: not in the zoo."""
    from torch import nn

    def conv(i, o, k, s=1, p=0):
        return nn.Sequential(nn.Conv2d(i, o, k, s, p, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    class Cat(nn.Module):
        def __init__(self, *branches):
            super().__init__()
            self.branches = nn.ModuleList(branches)

        def forward(self, x):
            return torch.cat([b(x) for b in self.branches], 1)

    class Residual(nn.Module):
        def __init__(self, branches, width, channels):
            super().__init__()
            self.branches, self.up = Cat(*branches), nn.Conv2d(width, channels, 1)

        def forward(self, x):
            return torch.relu(x + 0.1 * self.up(self.branches(x)))

    seq = nn.Sequential
    stem = seq(conv(3, 32, 3, 2), conv(32, 32, 3), conv(32, 64, 3, 1, 1),
               Cat(nn.MaxPool2d(3, 2), conv(64, 96, 3, 2)),
               Cat(seq(conv(160, 64, 1), conv(64, 96, 3)),
                   seq(conv(160, 64, 1), conv(64, 64, (7, 1), 1, (3, 0)), conv(64, 64, (1, 7), 1, (0, 3)),
                       conv(64, 96, 3))),
               Cat(conv(192, 192, 3, 2), nn.MaxPool2d(3, 2)))
    blocks_a = [Residual([conv(384, 32, 1), seq(conv(384, 32, 1), conv(32, 32, 3, 1, 1)),
                          seq(conv(384, 32, 1), conv(32, 48, 3, 1, 1), conv(48, 64, 3, 1, 1))], 128, 384)
                for _ in range(5)]
    reduction_a = Cat(nn.MaxPool2d(3, 2), conv(384, 384, 3, 2),
                      seq(conv(384, 256, 1), conv(256, 256, 3, 1, 1), conv(256, 384, 3, 2)))
    blocks_b = [Residual([conv(1152, 192, 1), seq(conv(1152, 128, 1), conv(128, 160, (1, 7), 1, (0, 3)),
                                                  conv(160, 192, (7, 1), 1, (3, 0)))], 384, 1152)
                for _ in range(10)]
    reduction_b = Cat(nn.MaxPool2d(3, 2), seq(conv(1152, 256, 1), conv(256, 384, 3, 2)),
                      seq(conv(1152, 256, 1), conv(256, 288, 3, 2)),
                      seq(conv(1152, 256, 1), conv(256, 288, 3, 1, 1), conv(288, 320, 3, 2)))
    blocks_c = [Residual([conv(2144, 192, 1), seq(conv(2144, 192, 1), conv(192, 224, (1, 3), 1, (0, 1)),
                                                  conv(224, 256, (3, 1), 1, (1, 0)))], 448, 2144)
                for _ in range(5)]
    model = seq(stem, *blocks_a, reduction_a, *blocks_b, reduction_b, *blocks_c, nn.AdaptiveAvgPool2d(1),
                nn.Flatten(), nn.Linear(2144, 1000))
    return count_flops(model.eval(), (3, 299, 299)) / 1e9


def se_param_count(widths) -> int:
    """Parameters of r=16 SE modules (with FC biases) on channel counts `widths`."""
    return sum(2 * c * max(1, c // 16) + c + max(1, c // 16) for c in widths)


def shufflenet_se_readings() -> dict:
    """SE parameters (M) of SE-ShuffleNet under the three placements the seeds leave open."""
    from sebench.models.shufflenet import ShuffleUnit
    units = [m for m in build_model("shufflenet_v1").modules() if isinstance(m, ShuffleUnit)]
    return {"branch": se_param_count(u.bn3.num_features for u in units) / 1e6,
            "output": se_param_count(u.bn3.num_features + (u.conv1.in_channels if u.stride == 2 else 0)
                                     for u in units) / 1e6,
            "bottleneck": se_param_count(u.bn2.num_features for u in units) / 1e6}


def _pct(ours: float, paper) -> str:
    return "" if paper is None else f"{100 * (ours - paper) / paper:+.1f}"


def rows() -> tuple[list[list], dict]:
    table, facts = [], {}
    for i, (label, name, g_plain, g_se, p_plain, p_se, note) in enumerate(ROWS, 1):
        print(f"[{i}/{len(ROWS)}] {label} ({name})", file=sys.stderr, flush=True)
        m = measure(name)
        facts[name] = m
        if name == "inception_resnet_v2":
            at224 = measure(name, (3, 224, 224))
            facts["irv2_224"] = at224
            facts["irv2_unpadded"] = irv2_unpadded_stem()
            facts["irv2_figure15"] = paper_figure15_irv2_gflops()
            note += (f"; at 224x224: {at224['plain_gflops']:.2f} / {at224['se_gflops']:.2f} GFLOPs")
        diff = m["plain_gflops"] - g_plain
        table.append([label, name, m["input"], f"{m['plain_params']:.2f}", f"{m['plain_gflops']:.3f}",
                      f"{m['se_params']:.2f}", f"{m['se_gflops']:.3f}", _paper(g_plain), _paper(g_se),
                      f"{diff:+.3f}", f"{100 * diff / g_plain:+.1f}", f"{m['se_gflops'] - g_se:+.3f}",
                      "" if p_plain is None else f"{p_plain:g}", "" if p_se is None else f"{p_se:g}",
                      _pct(m["plain_params"], p_plain), note])
    facts["shufflenet_se"] = shufflenet_se_readings()
    return table, facts


def other_rows() -> list[list]:
    table = []
    for label, name, p_plain, note in OTHER_ROWS:
        print(f"[other] {label} ({name})", file=sys.stderr, flush=True)
        m = measure(name)
        table.append([label, name, m["input"], f"{m['plain_params']:.2f}", f"{m['plain_gflops']:.3f}",
                      f"{m['se_params']:.2f}", f"{m['se_gflops']:.3f}",
                      "" if p_plain is None else f"{p_plain:g}", _pct(m["plain_params"], p_plain), note])
    return table


def _paper(g: float) -> str:
    return f"{g:.2f}" if g >= 1 else f"{g:.3f}"


def versions() -> str:
    import timm
    import torchvision
    return f"torch {torch.__version__}, torchvision {torchvision.__version__}, timm {timm.__version__}"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _table(header: list[str], table: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(str(c) for c in row) + " |" for row in table)]


def notes(facts: dict) -> list[str]:
    """Where ours and the source differ by more than 2%, and the readings each network rests on."""
    irv2, at224 = facts["inception_resnet_v2"], facts["irv2_224"]
    unpadded, fig15 = facts["irv2_unpadded"], facts["irv2_figure15"]
    shuf, shuf_se = facts["shufflenet_v1"], facts["shufflenet_se"]
    bni = facts["bn_inception"]
    return [
        "## Differences over 2%, and the readings behind each network",
        "",
        f"**Inception-ResNet-v2: {irv2['plain_gflops']:.2f} against the paper's 11.75 GFLOPs "
        f"({100 * (irv2['plain_gflops'] - 11.75) / 11.75:+.0f}%).** Three candidate causes, checked:",
        "",
        "- *Counting convention*: not the cause. The same counter gives the paper's figures for the ResNets, "
        "ResNeXts, VGG-16, BN-Inception and MobileNet within 0.3%.",
        f"- *Input size*: the network is counted at its 299x299 input (at 224x224 it is "
        f"{at224['plain_gflops']:.2f}). Its stem and reductions are unpadded, so the count moves in steps "
        "with the grid sizes: it is 11.73 for inputs of 297-298 pixels (grids 34/16/7) and 13.16 from 299 "
        "(grids 35/17/8).",
        f"- *The network*: timm's Inception-ResNet-v2 is TF-slim's released one (10/20/10 residual units, "
        "320/1088/2080 channels). Szegedy et al. (2016, figures 15-19) draw 5/10/5 units on the Inception-v4 "
        f"stem (384/1152/2144 channels): {fig15:.2f} GFLOPs at 299x299 (`paper_figure15_irv2_gflops` in the "
        "generating script), not 11.75 either.",
        "",
        f"The likeliest source is the stem: with its third 3x3 conv (`conv2d_2b`, 32 -> 64) unpadded, as in an "
        "implementation whose convs default to no padding (Caffe's), the released network at 299x299 has the "
        f"34/16/7 grids and counts **{unpadded[0]:.3f} / {unpadded[1]:.3f} GFLOPs** (plain / SE) against the "
        f"paper's 11.75 / 11.76 ({100 * (unpadded[0] - 11.75) / 11.75:+.1f}%). The seeds do not say which "
        "implementation the SE authors used, so this is a reading, not a fact: the zoo keeps the released "
        "architecture (padded, as Szegedy et al.'s figure 3 draws that conv) and the row reads +12%.",
        "",
        f"**ShuffleNet: {shuf['plain_params']:.2f}M parameters against the printed 1.8M "
        f"({100 * (shuf['plain_params'] - 1.8) / 1.8:+.1f}%); SE {shuf['se_params']:.2f}M against 2.4M.** "
        f"The multiply-adds agree ({1000 * shuf['plain_gflops']:.1f} against 140 MFLOPs, "
        f"{100 * (shuf['plain_gflops'] - 0.140) / 0.140:+.1f}%). Both parameter counts read as truncated to "
        "0.1M (1.87 -> 1.8, 2.48 -> 2.4). Readings: "
        "the bottleneck is 1/4 of the stage width in every unit (60/120/240), stage 2's first 1x1 conv is "
        "ungrouped (as the ShuffleNet paper says), BN after every conv, no biases.",
        "",
        "*Where SE-ShuffleNet's SE modules sit* (the seeds do not say; the paper's +0.6M does). SE parameters "
        f"at r = 16: on each unit's residual branch before the add/concatenation: +{shuf_se['branch']:.2f}M; "
        f"on each unit's output (after the add/concatenation): +{shuf_se['output']:.2f}M; on the bottleneck "
        f"(after the depthwise conv): +{shuf_se['bottleneck']:.2f}M. Only the first fits 1.8M -> 2.4M "
        f"(1.87 + {shuf_se['branch']:.2f} = {shuf['se_params']:.2f}, printed 2.4 when truncated like the "
        f"baseline; the output reading would print 2.5 and the bottleneck reading 1.9). So SE sits where "
        "SE-ResNet puts it: on the residual branch, before it meets the shortcut (in a concatenating unit, "
        "on the branch's 216/240/480 channels). SE adds its FCs' multiply-adds only (+0.6 M); the paper's "
        "+2 MFLOPs is about that plus the channel scale over every branch output (~1.6 M multiplies; the "
        "pooling adds as many additions), which our counter leaves out (as below).",
        "",
        f"**BN-Inception: {bni['plain_gflops']:.3f} GFLOPs, {bni['plain_params']:.2f}M parameters** "
        f"(SE: {bni['se_gflops']:.3f}, {bni['se_params']:.2f}M; the SENet release's SE-BN-Inception, as "
        "OpenVINO's model zoo lists it, has 11.92M). Readings of Ioffe & Szegedy's figure 5: the first conv ('convolution*') is an ordinary "
        "7x7/2 conv, as in the released Caffe model (a depthwise-separable 7x7 is TF-slim's reading and "
        "would save ~0.08 GFLOPs); 3c's output is 14x14x576 and 4c/4d's depth 608 (what their columns sum "
        "to; the figure prints 28x28 and 576); pools pad by 1 (same map sizes as Caffe's ceil mode at 224); "
        "no dropout (the BN paper removes it). SE on all 10 Inception modules' outputs, 3c and 4e included.",
        "",
        "**MobileNet** is ours now (it was timm's `mobilenetv1_100`; same layers, same counts: "
        f"{facts['mobilenet_v1']['plain_params']:.2f}M, {1000 * facts['mobilenet_v1']['plain_gflops']:.1f} "
        "MFLOPs). SE after each of the 13 depthwise-separable blocks: +0.48M, the paper's 4.2M -> 4.7M.",
        "",
        "**SE's multiply-adds.** Our SE adds only its two FC layers' multiply-adds (ResNet-50: +0.0025 G); "
        "the paper's +0.01 G is about what the uncounted pooling and channel scale add, so 'SE diff' is "
        "~0.01 G (or ~2 MFLOPs) lower than 'diff' throughout.",
        "",
        "**Shake-Shake 26 2x96d** (the CIFAR-10 table's network, in the second table): Gastaldi's 26.2M parameters. Readings: "
        "shake-shake-image (alpha and beta per image), ReLU-conv-BN-ReLU-conv-BN branches, Gastaldi's "
        "two-path shifted shortcut where the width changes (stage 1's 16 -> 96 included). SE-Shake-Shake: "
        "one SE module per block on the shaken residual before the addition (as SE-ResNeXt aggregates "
        "its branches first); one per branch would add 0.19M instead of 0.10M; the SE paper prints no "
        "parameter count to choose between them.",
    ]


def to_markdown(table: list[list], other: list[list], facts: dict, env: str) -> str:
    lines = [
        "# ImageNet rows of the SE paper: parameters and FLOPs, ours vs the paper",
        "",
        "FLOPs are multiply-adds for one image (the paper's unit), counted with torch.utils.flop_counter "
        "(convolutions and matmuls; element-wise ops such as the SE scale are not counted). SE: r = 16 in "
        "every stage/module. 'diff' is ours minus the paper, for the plain network; 'SE diff' for the SE "
        "network; 'params diff %' for the plain network where the paper prints parameters. Paper numbers: "
        "source 003 (SE paper, TPAMI tables). Every row is the source's architecture (no substitutes); the "
        "notes below the tables explain every difference over 2% and state each reading we made.",
        "",
        f"Built with {env}. Generated by `benchmarks/imagenet_costs.py`.",
        "",
        *_table(HEADER, table),
        "",
        "## Networks of the other tables, and the 32x32 stand-ins",
        "",
        *_table(OTHER_HEADER, other),
        "",
        *notes(facts),
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = versions()
    table, facts = rows()
    other = other_rows()
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(HEADER + ["versions"])
    writer.writerows(row + [env] for row in table)
    write_atomic(out / "imagenet_costs.csv", buf.getvalue())
    text = to_markdown(table, other, facts, env)
    write_atomic(out / "imagenet_costs.md", text)
    print(text)
    print(f"wrote {out / 'imagenet_costs.md'} and {out / 'imagenet_costs.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
