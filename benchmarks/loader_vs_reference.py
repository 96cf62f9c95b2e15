"""Our training loop vs the common reference loop, side by side in one process.

Same model (CIFAR ResNet-20 unless --model says otherwise, same initial weights), same images (a
class-balanced subset of the CIFAR-10 JPEG mirror, or the whole of any array data set), same optimizer,
schedule and number of epochs, on the CPU or a GPU; the loops differ in what sebench changes:

* ours: the split as one uint8 tensor on the device, random crop (4-pixel zero padding), flip and
  normalisation as batched tensor ops (sebench.data.ArrayLoader), and the model in channels_last
  (`channels_last: true` in a spec; on this CPU oneDNN's NHWC convolutions are faster);
* reference: a torchvision-style dataset of PIL images with RandomCrop(32, padding=4),
  RandomHorizontalFlip, ToTensor, Normalize, and a DataLoader with 2 workers; NCHW model.

With `--amp bf16` a further arm, "ours bf16", is our loop with bf16 autocast (the suite's `amp: bf16`;
on a CPU it needs native bf16: the first line names the CPU flag that provides it, and without one the
benchmark stops, as the suite refuses such runs: an emulated arm would time the emulation).

A last arm, "compute only", trains the reference's NCHW model on batches that are already made (no
loading, no augmentation at all): the reference epoch time divided by its epoch time is the most any input
pipeline alone could gain (printed as the loader ceiling), which tells how much of a speedup must come
from the training step itself.

All arms train with sebench.engine.train_epoch and are evaluated on the same test images. They alternate
epoch by epoch so that machine load affects all alike. The last line is `speedup: X.XXx` (median epoch time
of the reference / ours).

    python benchmarks/loader_vs_reference.py --data-path ../shared/data/cifar10-jpeg.tar.xz
    python benchmarks/loader_vs_reference.py --dataset cifar10 --data-path cifar10-lossless.tar.xz \
        --train 0 --test 0 --amp bf16 --epochs 2          # full real data, with the bf16 arm
    python benchmarks/loader_vs_reference.py --device cuda --model resnet110 --train 0 --test 0
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time

import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from sebench.bench import cpu_name
from sebench.data import ArrayLoader, get_info, load_arrays, subset
from sebench.engine import evaluate, train_epoch
from sebench.engine.env import cpu_bf16_flag, emulated_bf16_error
from sebench.engine.optim import build_optimizer, build_scheduler
from sebench.models import build_model
from sebench.spec import OptimCfg


class PILDataset(Dataset):
    """The reference pipeline's dataset: PIL images decoded once, transformed per item."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, transform):
        self.images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in x_uint8]
        self.labels = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(self.images[i]), self.labels[i]


def reference_loaders(data, mean, std, batch_size, workers, seed, pin=False):
    train_tf = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize(mean, std)])
    test_tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    g = torch.Generator().manual_seed(seed)
    kw = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=pin)
    train = DataLoader(PILDataset(data.train_x, data.train_y, train_tf), batch_size=batch_size, shuffle=True,
                       generator=g, **kw)
    test = DataLoader(PILDataset(data.test_x, data.test_y, test_tf), batch_size=500, **kw)
    return train, test


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-path", default=os.environ.get("SEBENCH_CIFAR10_JPEG"),
                    help="the data set's archive (default: $SEBENCH_CIFAR10_JPEG); without it the embedded subset")
    ap.add_argument("--dataset", default=None,
                    help="registry name (default: cifar10-jpeg with a data path, else cifar10-embedded; "
                         "cifar10 with cifar10-lossless.tar.xz for the real pixels)")
    ap.add_argument("--cache-dir", default=os.environ.get("SEBENCH_CACHE"))
    ap.add_argument("--train", type=int, default=5000, help="training images (class-balanced subset; 0: all)")
    ap.add_argument("--test", type=int, default=1000, help="test images (0: all)")
    ap.add_argument("--model", default="resnet20", help="a CIFAR model of the zoo (resnet20, resnet110, ...)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads in the main process")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", choices=["off", "bf16"], default="off",
                    help="bf16: add an arm 'ours bf16' (our loop in channels_last + bf16 autocast)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                    help="train our arm in NCHW too")
    ap.add_argument("--no-ceiling", dest="ceiling", action="store_false", help="skip the compute-only arm")
    args = ap.parse_args(argv)
    if why := emulated_bf16_error(args.amp, args.device):
        ap.error(why)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = args.dataset or ("cifar10-jpeg" if args.data_path else "cifar10-embedded")
    full = load_arrays(name, path=args.data_path, cache_dir=args.cache_dir)
    data = subset(full, train=args.train or None, test=args.test or None, seed=0)
    info = get_info(name)
    if device.type == "cuda":
        where = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        where = f"cpu ({cpu_name()}; native bf16: {cpu_bf16_flag() or 'none'})"
    print(f"data: {info.label}, {len(data.train_y)} train / {len(data.test_y)} test images; {args.model}, "
          f"batch {args.batch_size}, {args.epochs} epochs; torch {torch.__version__}, {args.threads} threads, "
          f"reference DataLoader with {args.workers} workers; device {where}", flush=True)

    torch.manual_seed(args.seed)
    init = build_model(args.model, len(data.classes))
    optim_cfg = OptimCfg(lr=0.1, momentum=0.9, weight_decay=1e-4, schedule="multistep", milestones=(0.5, 0.75))
    loader_kw = dict(device=device, mean=info.mean, std=info.std, seed=args.seed)
    ours_train = ArrayLoader(data.train_x, data.train_y, batch_size=args.batch_size, train=True, **loader_kw)
    ours_test = ArrayLoader(data.test_x, data.test_y, batch_size=500, train=False, **loader_kw)
    ref_train, ref_test = reference_loaders(data, info.mean, info.std, args.batch_size, args.workers, args.seed,
                                            pin=device.type == "cuda")
    # arm -> (train batches, test batches, channels_last, autocast dtype)
    setups = {"ours": (ours_train, ours_test, args.channels_last, None)}
    if args.amp == "bf16":
        setups["ours bf16"] = (ours_train, ours_test, True, torch.bfloat16)
    setups["reference"] = (ref_train, ref_test, False, None)
    if args.ceiling:
        # Batches made once (one augmented epoch of our loader), replayed every epoch: no loading cost.
        ours_train.set_epoch(0)
        ready = [(x.clone(), y.clone()) for x, y in ours_train]
        setups["compute only"] = (ready, ours_test, False, None)

    arms = {}
    for arm, (train_loader, test_loader, channels_last, amp) in setups.items():
        model = copy.deepcopy(init).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = build_optimizer(model, optim_cfg)
        arms[arm] = dict(model=model, opt=opt, sched=build_scheduler(opt, optim_cfg, args.epochs, len(train_loader)),
                         train=train_loader, test=test_loader, cl=channels_last, amp=amp, times=[], err=None)
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(1, args.epochs + 1):
        for arm, a in arms.items():
            if hasattr(a["train"], "set_epoch"):
                a["train"].set_epoch(epoch)
            start = time.perf_counter()
            stats = train_epoch(a["model"], a["train"], a["opt"], a["sched"], loss_fn=loss_fn,
                                channels_last=a["cl"], amp_dtype=a["amp"])
            a["times"].append(time.perf_counter() - start)
            print(f"epoch {epoch} {arm:12s}: {a['times'][-1]:6.2f} s, train loss {stats['loss']:.3f}, "
                  f"{stats['img_s']:.0f} img/s", flush=True)
    for arm, a in arms.items():
        a["err"] = evaluate(a["model"], a["test"], channels_last=a["cl"], amp_dtype=a["amp"])["top1_err"]
    print()
    median = {arm: statistics.median(a["times"]) for arm, a in arms.items()}
    n_train = len(data.train_y)
    for arm, a in arms.items():
        print(f"{arm:12s}: median epoch {median[arm]:6.2f} s ({n_train / median[arm]:.0f} img/s; "
              f"all: {', '.join(f'{t:.2f}' for t in a['times'])}), final test top-1 error {a['err']:.2f}%")
    if "compute only" in median:
        print(f"loader ceiling: {median['reference'] / median['compute only']:.2f}x (reference epoch / NCHW "
              "training step alone: the most any input pipeline could gain here)")
    ours = [arm for arm in arms if arm.startswith("ours")]
    for arm in ours:
        print(f"{arm} vs reference: {median['reference'] / median[arm]:.2f}x per epoch, top-1 error "
              f"{arms[arm]['err'] - arms['reference']['err']:+.2f} points (one seed: differences of a few "
              "points are noise at this length)")
    best = ours[-1]  # the bf16 arm when there is one: our recipe at its fastest
    print(f"speedup: {median['reference'] / median[best]:.2f}x ({best} vs reference fp32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
