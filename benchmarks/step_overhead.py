"""Host overhead of one training step (issue 20): operators dispatched outside compiled graphs,
and the host time to issue a step.

    python benchmarks/step_overhead.py --device cpu --batch-size 32 --json
    python benchmarks/step_overhead.py --device cpu --batch-size 256 --compile --json

The step is dcl_core's real one (`make_train_step`, as `fit` wires it): augmentation of a
uint8 batch, encoder + head, loss, backward, optimiser and scheduler. One step is recorded
with the profiler after the warm-up (compilation included there); `ops_outside_graphs` counts
the top-level aten operators of that step (called from Python or the autograd engine, not
from inside another operator) that are not inside a compiled region: each is one trip
through the dispatcher, and on a GPU one or more kernel launches the host issues one by one.
`host_ms_per_step` is the median wall time of a call to the step without a device
synchronisation: the time the host needs to issue it (on the CPU, where the host also does
the work, it is the whole step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter

import torch

from dcl_core.config import TrainConfig
from dcl_core.training.augment import SimCLRAugment
from dcl_core.training.device import autocast_dtype, resolve_device
from dcl_core.training.losses import build_loss
from dcl_core.training.optim import build_optimizer, build_scheduler
from dcl_core.training.step import COMPILE_MODE, build_model, make_train_step, view_maker

# Profiler ranges that mark code running inside a compiled graph (forward and backward).
_COMPILED = ("Torch-Compiled Region", "CompiledFunction", "## Call CompiledFxGraph", "CompiledFxGraph")


def build_step(config: TrainConfig, device: torch.device, image_size: int):
    """The training step `fit` builds for this config, and a seeded generator for its views."""
    torch.manual_seed(config.seed)
    model, _ = build_model(config, image_size)
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    model.to(device, memory_format=fmt)
    optimizer = build_optimizer(model, config, device)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10**6, total_steps=10**7)
    augment = SimCLRAugment(config.augment, image_size, (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)).to(device)
    gen = torch.Generator(device=device)
    step = make_train_step(model, build_loss(config), view_maker(augment, gen), optimizer, scheduler,
                           dtype=autocast_dtype(config.precision, device), channels_last=bool(config.channels_last),
                           compile=bool(config.compile), compile_mode=COMPILE_MODE,
                           whole=config.compile_step is not False)
    return step, gen


def outside_ops(prof) -> Counter:
    """Top-level aten operators of a profile that ran outside every compiled region."""
    counts: Counter = Counter()
    for event in prof.events():
        if not event.name.startswith("aten::"):
            continue
        parent, inside = event.cpu_parent, False
        while parent is not None:
            if parent.name.startswith("aten::") or parent.name.startswith(_COMPILED):
                inside = True
                break
            parent = parent.cpu_parent
        if not inside:
            counts[event.name] += 1
    return counts


def measure(config: TrainConfig, device: torch.device, image_size: int, warmup: int, steps: int) -> dict:
    step, gen = build_step(config, device, image_size)
    images = torch.randint(0, 256, (config.batch_size, 3, image_size, image_size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0)).to(device)

    def run(i: int):
        gen.manual_seed(i)  # as fit does: the views of a step depend on the step alone
        return step(images)

    compile_start = time.perf_counter()
    for i in range(warmup):
        run(i)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    warmup_s = time.perf_counter() - compile_start
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run(warmup)
    counts = outside_ops(prof)
    host = []
    for i in range(steps):
        start = time.perf_counter()
        run(warmup + 1 + i)
        host.append(time.perf_counter() - start)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the next step's issue time must not include this one's work
    return {
        "device": str(device), "torch": torch.__version__, "encoder": config.encoder, "batch_size": config.batch_size,
        "image_size": image_size, "optimizer": config.optimizer, "compile": bool(config.compile),
        "compile_step": bool(config.compile) and config.compile_step is not False,
        "ops_outside_graphs": sum(counts.values()), "host_ms_per_step": 1000 * statistics.median(host),
        "warmup_s": warmup_s, "top_ops": dict(counts.most_common(8)),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--encoder", default="resnet18", choices=["resnet18", "resnet34", "resnet50", "convnet_small"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw", "lars"])
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="default: on for CUDA")
    p.add_argument("--compile-step", action=argparse.BooleanOptionalAction, default=None,
                   help="with --compile: the whole step (default) or the encoder alone (--no-compile-step)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (compilation happens here)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (the median is reported)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    config = TrainConfig(
        encoder=args.encoder, batch_size=args.batch_size, optimizer=args.optimizer, device=str(device),
        precision="bf16" if cuda else "fp32", compile=cuda if args.compile is None else args.compile,
        compile_step=args.compile_step,
        channels_last=cuda,
    )
    result = measure(config, device, args.image_size, args.warmup, args.steps)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{result['encoder']} batch {result['batch_size']} on {result['device']} (compile={result['compile']}): "
          f"{result['ops_outside_graphs']} ops outside graphs, {result['host_ms_per_step']:.1f} ms host per step")
    for name, n in result["top_ops"].items():
        print(f"  {n:5d}  {name}")


if __name__ == "__main__":
    main()
