"""Several training jobs on one GPU (DCL_JOBS_PER_GPU): aggregate views/s of 1, 2 and 4
concurrent runs, each in its own process as the worker runs them.

At batch 32 a ResNet-18 step on 32 px images is bound by kernel launches, not by the GPU's
arithmetic: one process leaves most of an H100 idle, and a second process's kernels fill the
gaps. Each process runs the engine's real training step (benchmarks/throughput.py `our_step`:
uint8 images on the device, batched augmentation there, the engine's precision and compile
settings), warms up, waits for the others at a barrier, then trains for `--seconds`.

    python benchmarks/jobs_per_gpu.py --device cuda
    python benchmarks/jobs_per_gpu.py --device cpu --encoder convnet_small --image-size 16 --seconds 2 --warmup 1 --jobs 1 2

views/s counts both views of every image; the aggregate is the sum of the processes' rates
(they start together at the barrier and run for the same window).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time


def run_one(args, barrier, results, rank: int) -> None:
    """One job's process: build the step, warm up, wait for the others, train for `seconds`."""
    import torch

    from dcl_core.config import TrainConfig
    from dcl_core.training.device import resolve_device
    from throughput import load, our_step, peak_gib, reset_peak, sync

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    config = TrainConfig(encoder=args.encoder, batch_size=args.batch_size, device=str(device),
                         precision="bf16" if cuda else "fp32", compile=cuda and args.compile, channels_last=cuda)
    args.data, args.cache_dir = "synthetic", None
    step = our_step(args, config, load(args), device, premade=False)
    reset_peak(device)
    for _ in range(args.warmup):
        step()
    sync(device)
    barrier.wait(timeout=args.timeout)  # a sibling that crashed must not hang the others
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        for _ in range(args.steps_per_check):
            step()
        steps += args.steps_per_check
        sync(device)  # only every few steps: the GPU's queue is not drained more than needed
    elapsed = time.perf_counter() - start
    results.put({"rank": rank, "views": steps * 2 * args.batch_size, "seconds": elapsed, "peak_gib": peak_gib(device)})


def measure(args, jobs: int) -> dict:
    ctx = mp.get_context("spawn")  # CUDA cannot be shared by forked processes
    barrier, results = ctx.Barrier(jobs), ctx.Queue()
    procs = [ctx.Process(target=run_one, args=(args, barrier, results, rank)) for rank in range(jobs)]
    for proc in procs:
        proc.start()
    rows = [results.get(timeout=args.timeout) for _ in procs]
    for proc in procs:
        proc.join()
        if proc.exitcode:
            raise SystemExit(f"a job process exited with {proc.exitcode}")
    per_job = [r["views"] / r["seconds"] for r in sorted(rows, key=lambda r: r["rank"])]
    peaks = [r["peak_gib"] for r in rows if r["peak_gib"] is not None]
    return {"jobs": jobs, "views_per_s": sum(per_job), "per_job": per_job, "peak_gib": max(peaks) if peaks else None}


def table(rows: list[dict]) -> str:
    base = rows[0]["views_per_s"]
    lines = ["| jobs at once | aggregate views/s | x one job | views/s per job | peak GiB per job |",
             "|---:|---:|---:|---|---:|"]
    for r in rows:
        per_job = ", ".join(f"{v:,.0f}" for v in r["per_job"])
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        lines.append(f"| {r['jobs']} | {r['views_per_s']:,.0f} | {r['views_per_s'] / base:.2f} | {per_job} | {peak} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--num-images", type=int, default=4096, help="synthetic uint8 images per process")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2, 4], help="concurrent processes to measure")
    p.add_argument("--seconds", type=float, default=20.0, help="timed window per measurement")
    p.add_argument("--warmup", type=int, default=30, help="steps before the window (compile, CUDA graphs)")
    p.add_argument("--steps-per-check", type=int, default=10)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True, help="on CUDA: the engine's default")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode (default: the engine's)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads per process")
    p.add_argument("--timeout", type=float, default=900.0)
    args = p.parse_args(argv)
    if args.compile_mode is None:
        from dcl_core.training.step import COMPILE_MODE

        args.compile_mode = COMPILE_MODE

    import torch

    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"device {name}, torch {torch.__version__}, {args.encoder}, batch {args.batch_size}, "
          f"{args.image_size}px, {args.seconds:g} s windows")
    rows = []
    for jobs in args.jobs:
        rows.append(measure(args, jobs))
        print(f"  {jobs} job(s): {rows[-1]['views_per_s']:,.0f} views/s", flush=True)
    print(table(rows))


if __name__ == "__main__":
    main()
