"""Where SE-ResNet-50's time goes on a GPU: torch.profiler over training steps and inference forwards of
sebench's SE-ResNet-50 (fused and reference SE tails) and timm's seresnet50, top ops by device time.

    python scripts/profile_se_cuda.py --batch-size 64 --steps 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sebench.layers.se import set_se_impl  # noqa: E402
from sebench.models import build_model  # noqa: E402


def models():
    import timm

    def ours(impl):
        m = build_model("resnet50", se="se", stride_in="3x3")
        set_se_impl(m, impl)
        return m
    return {"sebench SE fused": lambda: ours("fused"), "sebench SE reference": lambda: ours("reference"),
            "timm seresnet50": lambda: timm.create_model("seresnet50", pretrained=False)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--rows", type=int, default=12)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    for name, make in models().items():
        model = make().to(device, memory_format=torch.channels_last)
        x = torch.randn(args.batch_size, 3, 224, 224, device=device).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 1000, (args.batch_size,), device=device)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

        def train():
            model.train()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        def infer():
            model.eval()
            with torch.inference_mode():
                model(x)
        for mode, step in (("train", train), ("infer", infer)):
            for _ in range(3):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            with profile(activities=activities) as prof:
                for _ in range(args.steps):
                    step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
            print(f"\n== {name}, {mode}, batch {args.batch_size}, {args.steps} steps")
            print(prof.key_averages().table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
