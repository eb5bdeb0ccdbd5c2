"""SimCLR augmentation on the CPU: batched (dcl_core.training.augment) vs per-image torchvision/PIL.

Both pipelines make one view of each image of the same batches of --batch images, in one
process:
  batched    SimCLRAugment(AugmentConfig(), size) on a uint8 (B, 3, size, size) tensor
  per-image  torchvision.transforms on PIL images, image by image, stacked into a batch:
             RandomResizedCrop(size, scale=(0.08, 1)), RandomHorizontalFlip(),
             RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8), RandomGrayscale(0.2),
             ToTensor(), Normalize(mean, std)
(no blur on either side: SimCLR's CIFAR recipe, and the default for images <= 64 px).

    python benchmarks/augment_cpu.py                      # generated images
    python benchmarks/augment_cpu.py --data ../shared/data/cifar10-train-10k.zip
    python benchmarks/augment_cpu.py --steps 2            # smoke run, seconds

Timing: --warmup batches of each pipeline first (excluded), then --windows timed windows of
--steps batches per pipeline, the pipelines' windows interleaved (so a load change on a
shared machine hits both); reported: views/s of the median window. The per-image pipeline
is single-threaded (a DataLoader spreads it over worker processes, one core each), so by
default torch also gets one thread: a per-core comparison. --threads 0 keeps torch's default.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

try:
    from dcl_core.training.augment import SimCLRAugment
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dcl_core.training.augment import SimCLRAugment
from dcl_core.config import AugmentConfig

MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10
STD = (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def load_zip(path: Path, size: int, limit: int) -> np.ndarray:
    """Up to `limit` images of an image-folder zip (sorted names), RGB, resized to size x size."""
    arrays = []
    with zipfile.ZipFile(path) as archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith(IMAGE_SUFFIXES))
        for name in names[:limit]:
            with Image.open(io.BytesIO(archive.read(name))) as image:
                image = image.convert("RGB")
                if image.size != (size, size):
                    image = image.resize((size, size), Image.BILINEAR)
                arrays.append(np.asarray(image, dtype=np.uint8))
    if not arrays:
        raise SystemExit(f"{path}: no images found")
    return np.stack(arrays)


def generated(count: int, size: int, seed: int) -> np.ndarray:
    """Smooth random colour images (a low-resolution noise field, upsampled) plus noise."""
    rng = np.random.default_rng(seed)
    coarse = torch.from_numpy(rng.random((count, 3, 4, 4), dtype=np.float32))
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    noisy = smooth + 0.1 * torch.from_numpy(rng.standard_normal((count, 3, size, size), dtype=np.float32))
    return (noisy.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help="a .zip of an image folder (default: generated images)")
    parser.add_argument("--max-images", type=int, default=4096, help="images read from --data / generated")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (input and view)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="batches per timed window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches per pipeline first")
    parser.add_argument("--threads", type=int, default=1, help="torch threads; 0: torch's default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.steps, args.windows, args.batch, args.max_images) < 1:
        parser.error("--steps, --windows, --batch and --max-images must be >= 1")

    import torchvision.transforms as T

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    pixels = load_zip(args.data, args.size, args.max_images) if args.data else generated(
        max(args.max_images, args.batch), args.size, args.seed
    )
    n = len(pixels)
    tensors = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()  # (N, 3, S, S) uint8
    pils = [Image.fromarray(p) for p in pixels]
    batches = max(1, n // args.batch)
    if n < args.batch:
        raise SystemExit(f"need at least --batch={args.batch} images, have {n}")

    augment = SimCLRAugment(AugmentConfig(), args.size, MEAN, STD)
    per_image = T.Compose(
        [
            T.RandomResizedCrop(args.size, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            T.RandomGrayscale(p=0.2),
            T.ToTensor(),
            T.Normalize(MEAN, STD),
        ]
    )
    generator = torch.Generator().manual_seed(args.seed)

    def batched_step(k: int) -> torch.Tensor:
        i = (k % batches) * args.batch
        return augment(tensors[i : i + args.batch], generator)

    def per_image_step(k: int) -> torch.Tensor:
        i = (k % batches) * args.batch
        return torch.stack([per_image(image) for image in pils[i : i + args.batch]])

    pipelines = {"batched (dcl_core.training.augment)": batched_step, "per-image (torchvision/PIL)": per_image_step}
    with torch.inference_mode():
        for step in pipelines.values():
            out = None
            for k in range(args.warmup):
                out = step(k)
            assert out is None or out.shape == (args.batch, 3, args.size, args.size)
        seconds: dict[str, list[float]] = {name: [] for name in pipelines}
        k = args.warmup
        for _ in range(args.windows):
            for name, step in pipelines.items():
                start = time.perf_counter()
                for j in range(args.steps):
                    step(k + j)
                seconds[name].append(time.perf_counter() - start)
            k += args.steps

    views = args.steps * args.batch
    source = str(args.data) if args.data else "generated"
    print(
        f"SimCLR views on the CPU: {n} images ({source}), {args.size}x{args.size} px, batch {args.batch}, "
        f"{args.windows} windows x {args.steps} batches, torch threads {torch.get_num_threads()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'pipeline':30s} {'views/s':>10s} {'min..max views/s':>20s} {'ms/batch':>9s}")
    rates = {}
    for name, times in seconds.items():
        rate = views / statistics.median(times)
        rates[name] = rate
        low, high = views / max(times), views / min(times)
        print(f"{name:30s} {rate:10.0f} {f'{low:.0f}..{high:.0f}':>20s} {1000 * args.batch / rate:9.2f}")
    batched, single = rates.values()
    print(f"ratio batched / per-image: {batched / single:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
