"""compile_s of a first job and of a second job with the same shapes, both pointing
torch.compile's persistent caches (TORCHINDUCTOR_CACHE_DIR, as a worker sets it from
DCL_COMPILE_CACHE_DIR) at one folder (issue 20). Each job is a fresh process, as a worker's are.

    python benchmarks/compile_cache.py                      # tiny model, CPU
    python benchmarks/compile_cache.py --device cuda --encoder resnet18 --batch-size 256 --image-size 32

compile_s: the first step's time less a compiled step's (the median of the next two).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def child(args) -> dict:
    import torch

    from dcl_core.config import TrainConfig
    from dcl_core.training.device import resolve_device

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from step_overhead import build_step

    device = resolve_device(args.device)
    config = TrainConfig(encoder=args.encoder, batch_size=args.batch_size, device=str(device), compile=True,
                         precision="bf16" if device.type == "cuda" else "fp32", channels_last=device.type == "cuda")
    step, gen = build_step(config, device, args.image_size)
    images = torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size), dtype=torch.uint8).to(device)
    times = []
    for i in range(3):
        gen.manual_seed(i)
        start = time.perf_counter()
        step(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return {"compile_s": times[0] - statistics.median(times[1:]), "step_s": statistics.median(times[1:])}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--encoder", default="convnet_small")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--cache-dir", default=None, help="default: a new temporary folder (a cold start)")
    p.add_argument("--json", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or tmp
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, __file__, "--child", "--device", args.device, "--encoder", args.encoder,
               "--batch-size", str(args.batch_size), "--image-size", str(args.image_size)]
        runs = []
        for _ in range(2):
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {"encoder": args.encoder, "batch_size": args.batch_size, "image_size": args.image_size,
              "device": args.device, "compile_s_cold": runs[0]["compile_s"], "compile_s_warm": runs[1]["compile_s"],
              "warm_over_cold": runs[1]["compile_s"] / max(runs[0]["compile_s"], 1e-9)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"compile_s: first job {result['compile_s_cold']:.1f} s, second job {result['compile_s_warm']:.1f} s "
              f"(x{result['warm_over_cold']:.2f})")


if __name__ == "__main__":
    main()
