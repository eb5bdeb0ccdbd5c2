"""DCL and DCLW against SimCLR across batch sizes: the DCL paper's central claim, measured here.

Yeh et al. 2021 ("Decoupled Contrastive Learning") report that removing the positive pair
from the InfoNCE denominator helps most at small batches (ImageNet-1K, ResNet-50, batch 256,
100 epochs: DCL 64.6% vs SimCLR 57.5% linear top-1). This script trains SimCLR (NT-Xent),
DCL and DCLW with identical settings (same seed, so the same initial weights, image order and
augmented views; the same lr rule, `TrainConfig.learning_rate`) at each batch size, then
evaluates each frozen encoder with `dcl_core.evaluation.probe.run_probe`: a logistic-regression probe
(linear top-1) and a weighted kNN (k=200, the SSL monitor). A randomly initialised encoder of
the same architecture, probed the same way, is the reference row measured in the same run.

Splits (the probe's test images are never its training images):
- `builtin:` and `torchvision:` sources have a test split: pretraining and the probe's
  training set use `split: train`, the probe's test set `split: test` (or `--test`'s source).
- other sources (an image folder, a zip/tar, an .npz, with class sub-folders or `y`) without
  `--test`: a stratified `--test-fraction` of each class is held out, drawn with `--seed`.
Both splits are written as .npz files into OUT/data; results.json counts the test images that
are exact copies of a training image (0 for an honest split; a data set can hold duplicates).
`--max-images` keeps a seeded random subset of the training split (never the first N: image
folders are listed class by class).

Outputs in --out: results.json (settings and one row per run), dcl_vs_simclr.png (linear and
kNN top-1 against batch size, one line per method) and runs/METHOD-bBATCH/ (the encoders).
A markdown table is printed.

Defaults (a few minutes on a CPU on builtin:digits): convnet_small, 16 px, batch sizes 16 32 64,
15 epochs, SGD with lr 0.06*batch/256 and a cosine schedule, temperature 0.1, seed 0.

    # CPU, a few minutes (the defaults):
    python benchmarks/dcl_vs_simclr.py --data builtin:digits --threads 1
    # GPU, CIFAR-10 (10k training images, 20% of each class held out for the probe):
    python benchmarks/dcl_vs_simclr.py --data ../shared/data/cifar10-train-10k.zip \\
        --encoder resnet18 --batch-sizes 32 128 256 --epochs 30 --out runs/bench-cifar
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dcl_core.config import DatasetSpec, ProbeConfig, TrainConfig
from dcl_core.data.imageset import ImageSet
from dcl_core.data.sources import DataEnv, load_images
from dcl_core.errors import UserError
from dcl_core.evaluation.probe import run_probe
from dcl_core.export.encoder import save_encoder
from dcl_core.files import write_json_atomic
from dcl_core.models.encoders import build_encoder, resolve_small_stem
from dcl_core.training.train import fit

METHODS = ("simclr", "dcl", "dclw")
LABELS = {"simclr": "SimCLR (NT-Xent)", "dcl": "DCL", "dclw": "DCLW", "random": "random init"}
SMOKE = dict(batch_sizes=[8, 16], epochs=1, max_images=64, image_size=16, encoder="convnet_small")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="builtin:digits", help="labelled dataset source (default: builtin:digits)")
    p.add_argument("--test", help="labelled test source; default: --data's test split, or a held-out fraction")
    p.add_argument("--test-fraction", type=float, default=0.2, help="held out per class when there is no test split")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64])
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--encoder", choices=["convnet_small", "resnet18", "resnet34", "resnet50"], default="convnet_small")
    p.add_argument("--image-size", type=int,
                   help="resize images to this square size; default: native, but 16 for builtin:digits (8 px)")
    p.add_argument("--max-images", type=int, help="a seeded random subset of the training split")
    p.add_argument("--optimizer", choices=["sgd", "adam", "adamw", "lars"], default="sgd")
    p.add_argument("--lr", type=float, help="one lr for every run; default: TrainConfig's rule (sgd: 0.06*batch/256)")
    p.add_argument("--temperature", type=float, default=0.1)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-compile", action="store_true", help="do not torch.compile on CUDA")
    p.add_argument("--threads", type=int, help="torch CPU threads (1 is fastest on a busy machine)")
    p.add_argument("--no-knn", action="store_true", help="skip the kNN probe")
    p.add_argument("--out", default="runs/bench-dcl-vs-simclr")
    p.add_argument("--data-root", help="folder holding torchvision datasets")
    p.add_argument("--smoke", action="store_true",
                   help="a seconds-long check of the whole pipeline: " + ", ".join(f"{k}={v}" for k, v in SMOKE.items()))
    args = p.parse_args(argv)
    if args.smoke:
        for key, value in SMOKE.items():
            setattr(args, key, value)
    if args.image_size is None and args.data == "builtin:digits":
        args.image_size = 16  # room for random crops to keep part of a digit
    if not 0 < args.test_fraction < 1:
        p.error("--test-fraction must be between 0 and 1")
    return args


# --------------------------------------------------------------------------- splits


def _spec(source: str, split: str, image_size: int | None) -> DatasetSpec:
    return DatasetSpec(source=source, split=split, image_size=image_size)


def _has_test_split(source: str) -> bool:
    return DatasetSpec(source=source).kind in ("builtin", "torchvision")


def _labelled(data: ImageSet) -> ImageSet:
    if data.labels is None:
        raise UserError(f"{data.source} has no labels: the probe needs class sub-folders or y in the npz")
    return data


def _subset(data: ImageSet, index: torch.Tensor) -> ImageSet:
    return ImageSet(images=data.images[index], labels=data.labels[index], classes=data.classes, source=data.source)


def stratified_holdout(data: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(train, test): a seeded random `fraction` of every class goes to test (at least one image)."""
    gen = torch.Generator().manual_seed(seed)
    train_idx, test_idx = [], []
    for label in data.labels.unique():
        members = (data.labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        cut = max(1, round(fraction * len(members)))
        if cut >= len(members):
            raise UserError(f"{data.source}: class {int(label)} has {len(members)} image(s), too few to hold one out")
        test_idx.append(members[:cut])
        train_idx.append(members[cut:])
    return _subset(data, torch.cat(train_idx).sort().values), _subset(data, torch.cat(test_idx).sort().values)


def shared_images(train: ImageSet, test: ImageSet) -> int:
    """How many test images are byte-for-byte copies of a training image (0 for an honest split)."""
    seen = {hashlib.sha1(image.numpy().tobytes()).digest() for image in train.images}
    return sum(hashlib.sha1(image.numpy().tobytes()).digest() in seen for image in test.images)


def _save_npz(data: ImageSet, path: Path) -> DatasetSpec:
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"classes": np.array(data.classes)} if data.classes else {}
    np.savez(path, x=data.images.permute(0, 2, 3, 1).numpy(), y=data.labels.numpy(), **extra)
    return DatasetSpec(source=str(path))


def prepare_splits(args: argparse.Namespace, env: DataEnv, out: Path) -> tuple[DatasetSpec, DatasetSpec, dict]:
    """Writes OUT/data/train.npz and test.npz (see the module docstring); returns their specs and a summary."""
    train = _labelled(load_images(_spec(args.data, "train", args.image_size), env))
    if args.test:
        test = _labelled(load_images(_spec(args.test, "test", args.image_size), env))
        how = f"--test {args.test} (split test where the source has one)"
    elif _has_test_split(args.data):
        test = _labelled(load_images(_spec(args.data, "test", args.image_size), env))
        how = f"{args.data} split test"
    else:
        train, test = stratified_holdout(train, args.test_fraction, args.seed)
        how = f"{args.test_fraction:.0%} of each class of {args.data} held out (seed {args.seed})"
    if args.max_images is not None and args.max_images < train.num_images:
        keep = torch.randperm(train.num_images, generator=torch.Generator().manual_seed(args.seed))[: args.max_images]
        train = _subset(train, keep.sort().values)
    if train.image_size != test.image_size:
        raise UserError(f"train images are {train.image_size} px, test images {test.image_size} px; set --image-size")
    summary = {"train_images": train.num_images, "test_images": test.num_images, "image_size": train.image_size,
               "test_split": how, "test_images_also_in_train": shared_images(train, test)}
    return _save_npz(train, out / "data" / "train.npz"), _save_npz(test, out / "data" / "test.npz"), summary


# --------------------------------------------------------------------------- runs


def train_config(args: argparse.Namespace, method: str, batch_size: int, train: DatasetSpec) -> TrainConfig:
    """Everything but the method and the batch size is shared by every run."""
    return TrainConfig(
        method=method, dataset=train, encoder=args.encoder, batch_size=batch_size, epochs=args.epochs,
        optimizer=args.optimizer, lr=args.lr, temperature=args.temperature, seed=args.seed,
        device=args.device, compile=False if args.no_compile else None,
        log_every_steps=10_000, checkpoint_every_steps=100_000,
    )


def save_random_encoder(args: argparse.Namespace, train: DatasetSpec, env: DataEnv, run_dir: Path) -> None:
    """The untrained reference: the encoder exactly as every run starts it (same seed)."""
    data = load_images(train, env)
    mean, std = data.channel_stats()
    small_stem = resolve_small_stem(None, data.image_size)
    torch.manual_seed(args.seed)
    encoder = build_encoder(args.encoder, small_stem)
    save_encoder(encoder, run_dir, {"encoder": args.encoder, "small_stem": small_stem,
                                    "image_size": data.image_size, "mean": list(mean), "std": list(std)})


def probe(args: argparse.Namespace, run_dir: Path, train: DatasetSpec, test: DatasetSpec, env: DataEnv) -> dict:
    scores = {}
    classifiers = ["logistic"] if args.no_knn else ["logistic", "knn"]
    for classifier in classifiers:
        config = ProbeConfig(train=train, test=test, classifier=classifier, device=args.device, seed=args.seed)
        scores[classifier] = run_probe(run_dir, config, env).accuracy
    return {"linear_top1": scores["logistic"], "knn_top1": scores.get("knn")}


def run(args: argparse.Namespace) -> dict:
    out = Path(args.out)
    env = DataEnv(torchvision_root=Path(args.data_root) if args.data_root else None, cache_dir=out / "cache")
    train, test, summary = prepare_splits(args, env, out)
    print(f"data: {summary}", file=sys.stderr)
    if summary["test_images_also_in_train"]:
        print(f"warning: {summary['test_images_also_in_train']} test images are copies of training images", file=sys.stderr)
    rows = []

    reference = out / "runs" / "random-init"
    save_random_encoder(args, train, env, reference)
    rows.append({"method": "random", "batch_size": None, **probe(args, reference, train, test, env),
                 "train_seconds": 0.0, "steps": 0, "final_loss": None, "lr": None})
    print(f"random init: linear {rows[-1]['linear_top1']:.4f}", file=sys.stderr)

    for batch_size in args.batch_sizes:
        for method in args.methods:
            config = train_config(args, method, batch_size, train)
            run_dir = out / "runs" / f"{method}-b{batch_size}"
            shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: no resume, honest seconds
            result = fit(config, run_dir, env=env)
            row = {"method": method, "batch_size": batch_size, **probe(args, run_dir, train, test, env),
                   "train_seconds": result.seconds, "steps": result.steps,
                   "final_loss": result.final_metrics.get("loss"), "lr": config.learning_rate()}
            rows.append(row)
            print(f"{method} b{batch_size}: {result.steps} steps, loss {row['final_loss']:.4f}, "
                  f"{result.seconds:.1f}s, linear {row['linear_top1']:.4f}", file=sys.stderr)

    settings = {k: v for k, v in vars(args).items() if k != "out"}
    return {"settings": settings, "data": summary, "rows": rows, "environment": {
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "threads": torch.get_num_threads(), "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }}


# --------------------------------------------------------------------------- report


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def markdown_tables(results: dict) -> str:
    """A pivot (method x batch size, linear top-1 %) and one row per run with everything."""
    rows = results["rows"]
    sizes = sorted({r["batch_size"] for r in rows if r["batch_size"] is not None})
    reference = next(r for r in rows if r["method"] == "random")
    lines = ["Linear top-1 (%) by batch size", "",
             "| method | " + " | ".join(f"b{b}" for b in sizes) + " |",
             "|---|" + "---:|" * len(sizes)]
    for method in [m for m in METHODS if any(r["method"] == m for r in rows)]:
        cells = {r["batch_size"]: _pct(r["linear_top1"]) for r in rows if r["method"] == method}
        lines.append(f"| {LABELS[method]} | " + " | ".join(cells.get(b, "-") for b in sizes) + " |")
    lines.append(f"| {LABELS['random']} | " + " | ".join(_pct(reference["linear_top1"]) for _ in sizes) + " |")
    lines += ["", "| method | batch | lr | steps | final loss | linear top-1 % | kNN top-1 % | train s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        loss = "-" if r["final_loss"] is None else f"{r['final_loss']:.3f}"
        lr = "-" if r["lr"] is None else f"{r['lr']:.4g}"
        lines.append(f"| {LABELS[r['method']]} | {r['batch_size'] or '-'} | {lr} | {r['steps']} | {loss} | "
                     f"{_pct(r['linear_top1'])} | {_pct(r['knn_top1'])} | {r['train_seconds']:.1f} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    """Top-1 against batch size (log2 axis), one line per method; the random-init probe dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    metrics = [("linear_top1", "linear probe top-1")]
    if any(r["knn_top1"] is not None for r in rows):
        metrics.append(("knn_top1", "kNN top-1"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    reference = next(r for r in rows if r["method"] == "random")
    for ax, (key, title) in zip(axes[0], metrics):
        for method in METHODS:
            points = sorted((r["batch_size"], 100 * r[key]) for r in rows if r["method"] == method)
            if points:
                ax.plot(*zip(*points), marker="o", label=LABELS[method])
        ax.axhline(100 * reference[key], color="gray", linestyle="--", label=LABELS["random"])
        sizes = sorted({r["batch_size"] for r in rows if r["batch_size"] is not None})
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.set_xlabel("batch size")
        ax.set_ylabel("top-1 (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    s = results["settings"]
    fig.suptitle(f"{s['data']}, {s['encoder']}, {s['epochs']} epoch(s), {s['optimizer']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    try:
        results = run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    write_json_atomic(out / "results.json", results)
    plot(results, out / "dcl_vs_simclr.png")
    print(markdown_tables(results))
    print(f"\nwrote {out / 'results.json'} and {out / 'dcl_vs_simclr.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
