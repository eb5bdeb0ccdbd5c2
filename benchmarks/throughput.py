"""Training throughput, measured side by side in one process (issue: performance).

Rows (same images, model, batch size):
  model-only   pre-made views already on the device: forward + loss + backward + optimiser step
  ours         dcl_core's real training step: uint8 images on the device, batched augmentation there
  peer         lightly 1.6.0 as its DCL example runs: SimCLRTransform per image in DataLoader
               workers, its DCLLoss, torchvision ResNet + SimCLR head, fp32, SGD
  then         the augmentation alone on the CPU, ours batched vs per-image (augment_cpu.py)

    python benchmarks/throughput.py --device cuda --data ../shared/data/cifar10-train-10k.zip
    python benchmarks/throughput.py --device cpu --encoder convnet_small --batch-size 64 --steps 5

Timing: warm-up steps excluded, the median of several timed windows, the device synchronised
around each window. views/s counts both views of every image.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from dcl_core.config import DatasetSpec, TrainConfig
from dcl_core.data.sources import DataEnv, load_images
from dcl_core.models.encoders import build_encoder, resolve_small_stem
from dcl_core.training.augment import SimCLRAugment
from dcl_core.training.device import autocast_dtype, resolve_device
from dcl_core.training.losses import build_loss
from dcl_core.training.optim import build_optimizer, build_scheduler
from dcl_core.training.step import COMPILE_MODE, build_model, make_train_step, view_maker

EPOCH_VIEWS = 100_000  # a CIFAR-10 epoch: 50,000 images x 2 views


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, device: torch.device, warmup: int, steps: int, windows: int) -> float:
    """Median seconds per step over `windows` windows of `steps` steps, after `warmup` steps."""
    for _ in range(warmup):
        step()
    sync(device)
    per_step = []
    for _ in range(windows):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        per_step.append((time.perf_counter() - start) / steps)
    return statistics.median(per_step)


def peak_gib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def load(args) -> torch.Tensor:
    if args.data == "synthetic":
        gen = torch.Generator().manual_seed(0)
        return torch.randint(0, 256, (args.num_images, 3, args.image_size, args.image_size), dtype=torch.uint8, generator=gen)
    spec = DatasetSpec(source=args.data, image_size=args.image_size, max_images=args.num_images)
    return load_images(spec, DataEnv(cache_dir=Path(args.cache_dir) if args.cache_dir else None)).images


def our_step(args, config: TrainConfig, images: torch.Tensor, device, premade: bool):
    dtype = autocast_dtype(config.precision, device)
    torch.manual_seed(0)
    model, _ = build_model(config, args.image_size)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    optimizer = build_optimizer(model, config, device)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10**6, total_steps=10**7)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    augment = SimCLRAugment(config.augment, args.image_size, mean, std).to(device)
    gen = torch.Generator(device=device).manual_seed(0)
    on_device = images.to(device)
    b = config.batch_size
    if premade:
        first = on_device[:b]
        fixed = view_maker(augment, gen)(first)
        make_views = lambda batch: fixed  # noqa: E731
    else:
        make_views = view_maker(augment, gen)
    step_fn = make_train_step(model, build_loss(config), make_views, optimizer, scheduler,
                              dtype=dtype, channels_last=config.channels_last, compile=config.compile,
                              compile_mode=args.compile_mode)
    n = on_device.shape[0]
    state = {"order": torch.randperm(n, device=device), "pos": 0}

    def step():
        if state["pos"] + b > n:
            state["order"], state["pos"] = torch.randperm(n, device=device), 0
        idx = state["order"][state["pos"]:state["pos"] + b]
        state["pos"] += b
        step_fn(on_device[idx])

    return step


def peer_step(args, images: torch.Tensor, device):
    """lightly's DCL example set-up, over the same images (held as PIL images in memory)."""
    from lightly.loss import DCLLoss
    from lightly.models.modules import SimCLRProjectionHead
    from lightly.transforms import SimCLRTransform
    from PIL import Image

    pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]

    class Views(torch.utils.data.Dataset):
        def __init__(self):
            self.transform = SimCLRTransform(input_size=args.image_size, gaussian_blur=0.0)

        def __len__(self):
            return len(pil)

        def __getitem__(self, i):
            return self.transform(pil[i])

    loader = torch.utils.data.DataLoader(
        Views(), batch_size=args.batch_size, shuffle=True, drop_last=True, num_workers=args.peer_workers,
        pin_memory=device.type == "cuda", persistent_workers=args.peer_workers > 0,
    )
    # The same torchvision network as ours (small stem at 32 px, fc removed), lightly's head.
    backbone = build_encoder(args.encoder, resolve_small_stem(None, args.image_size))
    head = SimCLRProjectionHead(backbone.feature_dim, backbone.feature_dim, 128)
    model = nn.ModuleDict({"backbone": backbone, "head": head}).to(device)
    criterion = DCLLoss(temperature=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06 * args.batch_size / 256, momentum=0.9, weight_decay=5e-4)
    batches = iter(loader)

    def forward(x):
        return model["head"](model["backbone"](x))

    def step():
        nonlocal batches
        try:
            views = next(batches)
        except StopIteration:
            batches = iter(loader)
            views = next(batches)
        x0, x1 = (v.to(device, non_blocking=True) for v in views)
        loss = criterion(forward(x0), forward(x1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--encoder", default="resnet18", choices=["resnet18", "resnet34", "resnet50", "convnet_small"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="steps per timed window")
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--data", default="synthetic", help="'synthetic' or a dataset source (e.g. the CIFAR-10 zip)")
    p.add_argument("--num-images", type=int, default=10_000)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast (default: on for CUDA)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile (default: on for CUDA)")
    p.add_argument("--compile-mode", default=COMPILE_MODE, help="torch.compile mode (default: the engine's)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None, help="default: on for CUDA")
    p.add_argument("--peer", action=argparse.BooleanOptionalAction, default=True, help="also time lightly (needs the bench extra)")
    p.add_argument("--peer-workers", type=int, default=8)
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    amp = cuda if args.amp is None else args.amp
    config = TrainConfig(
        encoder=args.encoder, batch_size=args.batch_size, device=str(device),
        precision="bf16" if amp else "fp32",
        compile=cuda if args.compile is None else args.compile,
        channels_last=cuda if args.channels_last is None else args.channels_last,
    )
    images = load(args)
    print(f"device {torch.cuda.get_device_name(device) if cuda else 'cpu'}, torch {torch.__version__}, {args.encoder}, "
          f"batch {args.batch_size}, {args.image_size}px, {images.shape[0]} images ({args.data}), "
          f"amp={amp} compile={config.compile} channels_last={config.channels_last}")

    rows = []
    for name, make in [("model-only", lambda: our_step(args, config, images, device, premade=True)),
                       ("ours (end to end)", lambda: our_step(args, config, images, device, premade=False))]:
        reset_peak(device)
        s = timed(make(), device, args.warmup, args.steps, args.windows)
        rows.append((name, 2 * args.batch_size / s, peak_gib(device)))
    if args.peer:
        reset_peak(device)
        s = timed(peer_step(args, images, device), device, args.warmup, args.steps, args.windows)
        rows.append(("peer: lightly 1.6.0 (end to end)", 2 * args.batch_size / s, peak_gib(device)))

    print("\n| run | views/s | s per CIFAR-10 epoch (100k views) | peak GPU GiB |")
    print("|---|---:|---:|---:|")
    for name, vps, mem in rows:
        print(f"| {name} | {vps:,.0f} | {EPOCH_VIEWS / vps:.2f} | {'-' if mem is None else f'{mem:.2f}'} |")
    speeds = {name: vps for name, vps, _ in rows}
    ours = speeds["ours (end to end)"]
    print(f"\nours / model-only: {ours / speeds['model-only']:.2f}")
    if args.peer:
        print(f"ours / peer: {ours / speeds['peer: lightly 1.6.0 (end to end)']:.2f}")

    print("\nAugmentation alone on the CPU, batched vs per-image torchvision/PIL (benchmarks/augment_cpu.py):")
    import augment_cpu  # the sibling script; python puts this folder on sys.path

    augment_cpu.main(["--size", str(args.image_size), "--batch", str(args.batch_size),
                      "--steps", str(max(2, args.steps // 4)), "--windows", str(args.windows)])

if __name__ == "__main__":
    main()
