"""Image loading for a probe, embed or training job on an image zip: Pillow file by file (the
path before batched decoding), the batched decoder on an empty decode cache (a first job on
an upload), and the decode cache hit (every later job on it); then a linear probe end to end,
first run vs cached run.

    python benchmarks/decode_cache.py --data ../shared/data/cifar10-train-10k.zip
    python benchmarks/decode_cache.py --data ../shared/data/cifar10-train.zip --device cuda --encoder resnet18

The archive is extracted first and not timed (an upload to the service is extracted when it
is uploaded). Loading rows: --repeats rounds, the three ways interleaved within each round (a
load change on a shared machine hits all three), each cold one on a fresh cache; the median
is reported. Probe rows: one first run (empty decode cache) and one cached run; the probe
trains on every image and tests on the first --test-images (another file list, decoded too).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from unittest.mock import patch

try:
    from dcl_core.data import decode
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dcl_core.data import decode
from dcl_core.config import DatasetSpec, ProbeConfig
from dcl_core.data.imageset import tree_files
from dcl_core.data.sources import DataEnv, _file_source, load_images
from dcl_core.evaluation.probe import run_probe
from dcl_core.export.encoder import save_encoder
from dcl_core.models.encoders import build_encoder


def _pillow_only(paths, out, size, fallback, **kwargs):
    """The loader as it was before batched decoding: Pillow, file by file, in threads."""
    return decode.parallel_map(fallback, len(paths))


def _load_seconds(spec, env) -> float:
    started = time.perf_counter()
    load_images(spec, env)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="an image zip with class folders")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--encoder", default="convnet_small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--epochs", type=int, default=20, help="logistic regression steps")
    parser.add_argument("--no-probe", dest="probe", action="store_false", help="loading rows only")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="dcl-bench-decode-") as tmp:
        tmp = Path(tmp)
        extracted = DataEnv(cache_dir=tmp / "shared")
        train = DatasetSpec(source=args.data, image_size=args.image_size)
        test = DatasetSpec(source=args.data, image_size=args.image_size, max_images=args.test_images)
        root = _file_source(train, extracted, None)  # extracted once, not timed
        tree = DatasetSpec(source=str(root), image_size=args.image_size)
        count = len(tree_files(root, tree)[0])

        times: dict[str, list[float]] = {"pillow": [], "batched": [], "cached": []}
        for round in range(args.repeats):
            env = DataEnv(cache_dir=tmp / f"cache{round}")
            with patch.object(decode, "decode_files", _pillow_only):
                times["pillow"].append(_load_seconds(tree, DataEnv()))
            times["batched"].append(_load_seconds(tree, env))
            times["cached"].append(_load_seconds(tree, env))

        probe_rows = []
        if args.probe:
            encoder_dir = tmp / "encoder"
            small = args.image_size <= 64
            save_encoder(build_encoder(args.encoder, small), encoder_dir, {
                "encoder": args.encoder, "small_stem": small, "image_size": args.image_size,
                "mean": [0.5] * 3, "std": [0.25] * 3})
            config = ProbeConfig(train=train, test=test, epochs=args.epochs, device=args.device)
            for name in ("probe, first run (decodes)", "probe, cached run (decode cache hit)"):
                result = run_probe(encoder_dir, config, extracted)
                probe_rows.append((name, result.seconds, result.load_seconds))

    decoder = "nvJPEG (cuda)" if decode.gpu_decode_available() else "libjpeg-turbo in CPU threads"
    print(f"{count} JPEGs at {args.image_size} px; batched decoder: {decoder}; median of {args.repeats} rounds")
    print("| load the images | s | images/s |\n|---|---:|---:|")
    for key, name in (("pillow", "Pillow file by file (before)"), ("batched", "batched decoder, empty cache"),
                      ("cached", "decode cache hit")):
        seconds = statistics.median(times[key])
        print(f"| {name} | {seconds:.2f} | {count / seconds:,.0f} |")
    if probe_rows:
        print(f"\nlinear probe, {count} train + {args.test_images} test images, encoder {args.encoder} on {args.device}")
        print("| run | end to end s | of which loading s |\n|---|---:|---:|")
        for name, total, load in probe_rows:
            print(f"| {name} | {total:.2f} | {load:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
