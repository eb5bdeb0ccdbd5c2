"""What checkpoints cost a training run: per-epoch wall time (metrics' `epoch_time_s`, end to end)
with a checkpoint at every epoch end written three ways, in the same process, rounds interleaved
(a load change on a shared machine hits every way):

- `none`: no checkpoint written (the engine's writer replaced by one that drops the state);
- `sync`: the path before issue 20, emulated: the state saved, fsynced and read back for its
  sha256 in the training thread;
- `async`: the engine's writer (host copy in the training thread; write, hash, fsync in the background).

    python benchmarks/checkpoint_overhead.py
    python benchmarks/checkpoint_overhead.py --encoder convnet_small --epochs 2 --rounds 1 --json   # a smoke run

The first epoch of every run is left out (warm-up). Prints a table with each way's median epoch
seconds, its overhead against `none`, and the median share of an epoch the training thread
waited for checkpoints (`checkpoint_s / epoch_time_s`, from the same epochs); with --json one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from unittest.mock import patch

try:
    from dcl_core.config import TrainConfig
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from dcl_core.config import TrainConfig

from dcl_core.files import sha256_file
from dcl_core.hooks import NullHooks
from dcl_core.training import train
from dcl_core.training.checkpoint import save_checkpoint
from dcl_core.training.checkpoint_writer import CheckpointWriter

WAYS = ("none", "sync", "async")


class NoWrite:
    def __init__(self, path, on_written, pin):
        pass

    def save(self, state, gate) -> None:
        pass

    def wait(self) -> None:
        pass

    close = wait


class SyncWrite(NoWrite):
    """Before issue 20: torch.save of the live state, fsync, then the file read back for its hash."""

    def __init__(self, path, on_written, pin):
        self.path, self.on_written = path, on_written

    def save(self, state, gate) -> None:
        save_checkpoint(self.path, state)
        self.on_written(self.path, sha256_file(self.path))


class Epochs(NullHooks):
    def __init__(self):
        self.rows: list[dict] = []

    def on_step(self, step, metrics):
        if "epoch_time_s" in metrics:
            self.rows.append(metrics)


def run(config: TrainConfig, way: str, work: Path) -> tuple[list[dict], int]:
    writer = {"none": NoWrite, "sync": SyncWrite, "async": CheckpointWriter}[way]
    hooks = Epochs()
    run_dir = Path(tempfile.mkdtemp(dir=work))
    with patch.object(train, "CheckpointWriter", writer):
        train.fit(config, run_dir, hooks)
    checkpoint = run_dir / train.CHECKPOINT
    return hooks.rows[1:], checkpoint.stat().st_size if checkpoint.exists() else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default="resnet18")
    p.add_argument("--data", default="builtin:digits", help="a dataset source")
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--num-images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4, help="per run; the first is left out")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--work-dir", default=None, help="where the runs write (default: a temp folder)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    config = TrainConfig(
        encoder=args.encoder, batch_size=args.batch_size, epochs=args.epochs, device=args.device, seed=0,
        dataset={"source": args.data, "image_size": args.image_size, "max_images": args.num_images},
        log_every_steps=10_000, checkpoint_every_steps=10**9, checkpoint_every_s=1e9,  # epoch ends only
    )
    epochs: dict[str, list[dict]] = {way: [] for way in WAYS}
    size = 0
    with tempfile.TemporaryDirectory(dir=args.work_dir) as work:
        for _ in range(args.rounds):
            for way in WAYS:
                seconds, written = run(config, way, Path(work))
                epochs[way] += seconds
                size = max(size, written)
    median = {way: statistics.median(row["epoch_time_s"] for row in epochs[way]) for way in WAYS}
    # The training thread's own wait, from the same epochs: steadier than a difference of epoch
    # times on a loaded machine (it leaves out what the writer thread takes from shared cores).
    waited = {way: statistics.median(row["checkpoint_s"] / row["epoch_time_s"] for row in epochs[way]) for way in WAYS}
    result = {
        "encoder": args.encoder, "batch_size": args.batch_size, "image_size": args.image_size,
        "steps_per_epoch": args.num_images // args.batch_size, "checkpoint_mb": round(size / 1e6, 1),
        "epochs_timed": {way: len(epochs[way]) for way in WAYS},
        "epoch_s": {way: round(median[way], 4) for way in WAYS},
        "overhead_pct": {way: round(100 * (median[way] / median["none"] - 1), 2) for way in ("sync", "async")},
        "checkpoint_s_share_pct": {way: round(100 * waited[way], 2) for way in WAYS},
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.encoder}, batch {args.batch_size}, {args.image_size} px, {result['steps_per_epoch']} steps an epoch, "
          f"checkpoint {result['checkpoint_mb']} MB at every epoch end; median of {len(epochs['none'])} epochs a way")
    print("| checkpoints | s per epoch (end to end) | overhead vs none | checkpoint_s / epoch_time_s |")
    print("|---|---|---|---|")
    for way in WAYS:
        overhead = "" if way == "none" else f"{result['overhead_pct'][way]:+.1f}%"
        print(f"| {way} | {median[way]:.3f} | {overhead} | {result['checkpoint_s_share_pct'][way]:.2f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
