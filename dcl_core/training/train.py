"""The training loop: `fit(config, run_dir, hooks)` pretrains an encoder and exports it.

Hot path rules (DESIGN.md): the images live as one uint8 tensor on the training device (or,
for image files too large for memory, stream as uint8 batches from DataLoader workers), views
are made there in batch, the loss is accumulated on the device and read every
`log_every_steps` steps; nothing in a step waits for the host.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from dcl_core.config import TrainConfig
from dcl_core.data.imageset import ImageSet, epoch_order
from dcl_core.data.sources import DataEnv, load_images, open_images
from dcl_core.data.stream import ImageStream
from dcl_core.errors import UserError
from dcl_core.export.encoder import save_encoder
from dcl_core.export.formats import export_formats
from dcl_core.hooks import Hooks, NullHooks
from dcl_core.tracking import SinkHooks, TensorBoardHooks
from dcl_core.training.augment import SimCLRAugment
from dcl_core.training.checkpoint import load_checkpoint
from dcl_core.training.checkpoint_writer import CheckpointWriter, Gate
from dcl_core.training.device import autocast_dtype, resolve_device
from dcl_core.training.image_ops import EvalTransform
from dcl_core.training.losses import build_loss
from dcl_core.training.optim import build_optimizer, build_scheduler
from dcl_core.training.paths import CHECKPOINT, METRICS
from dcl_core.training.run_log import HookThread, LossReader, MetricsLog
from dcl_core.training.step import COMPILE_MODE, build_model, make_train_step, view_maker


@dataclass
class TrainResult:
    steps: int
    total_steps: int
    stopped: bool  # True when hooks.should_stop() ended the run early
    final_metrics: dict[str, float] = field(default_factory=dict)
    encoder_sha256: str | None = None
    seconds: float = 0.0
    compile_s: float | None = None  # the first step's wall time when compiling (compilation included)
    evaluation: dict[str, Any] | None = None  # config.evaluate's {"scores", "evaluation"} (dcl_core.evaluation.evaluate)
    warnings: list[str] = field(default_factory=list)  # advice a user should read (e.g. ViT with SGD)


def training_advice(config: TrainConfig, encoder: nn.Module) -> list[str]:
    """Warnings for set-ups known to train badly. Vision transformers (a `patch_embed` module,
    as timm's ViT, DeiT, Swin have) need an adaptive optimiser and a warmup (Dosovitskiy et al.
    2021; Chen et al. 2021, MoCo v3): plain SGD or no warmup often stalls or diverges."""
    if not hasattr(encoder, "patch_embed"):
        return []
    problems = []
    if config.optimizer in ("sgd", "adam"):
        problems.append(f"optimizer {config.optimizer!r} (use adamw or lars)")
    if config.warmup_epochs == 0:
        problems.append("no warmup (set warmup_epochs, e.g. 10 for a 100-epoch run)")
    if not problems:
        return []
    return [f"{config.encoder} is a vision transformer trained with {' and '.join(problems)}: ViTs train "
            "poorly this way; e.g. optimizer adamw, lr 5e-4 * batch_size / 256, weight_decay 0.05, "
            "warmup_epochs 10 (close to DINO's ViT settings, Caron et al. 2021)"]


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _place_images(data: ImageSet, device: torch.device) -> torch.Tensor:
    """Images on the device when they fit comfortably, else pinned host memory."""
    images = data.images
    if device.type != "cuda":
        return images
    free, _ = torch.cuda.mem_get_info(device)
    if images.numel() < 0.25 * free:
        return images.to(device)
    return images.pin_memory()


def _loader_workers(device: torch.device) -> int:
    """DataLoader workers for a stream: up to 8 on CUDA (decoding must keep up with the GPU);
    on a CPU at most 2, as decoding shares the cores with the training step itself."""
    cpus = os.cpu_count() or 1
    return min(8, cpus) if device.type == "cuda" else min(2, cpus // 2)


def _epoch_batches(data: ImageSet | ImageStream, images: torch.Tensor | None, config: TrainConfig, epoch: int,
                   skip: int, rank: int, world: int, device: torch.device) -> Iterator[torch.Tensor]:
    """This rank's uint8 batches of one epoch in `epoch_order`, from batch `skip` on: indexed from
    the in-memory tensor, or decoded from the files. Shape: (batch_size // world, 3, S, S)."""
    if isinstance(data, ImageStream):
        yield from data.batches(epoch, config.seed, config.batch_size, skip=skip, rank=rank, world=world,
                                num_workers=_loader_workers(device), pin_memory=device.type == "cuda")
        return
    local_batch = config.batch_size // world
    order = epoch_order(data.num_images, config.seed, epoch).to(images.device)
    for i in range(skip, data.num_images // config.batch_size):
        start = i * config.batch_size + rank * local_batch
        yield images[order[start:start + local_batch]]


def _config_fingerprint(config: TrainConfig) -> str:
    # Fields that do not change the run's math may differ on resume (e.g. logging cadence;
    # in-memory or streamed data train to the same weights).
    skip = {"log_every_steps", "checkpoint_every_steps", "checkpoint_every_s", "max_runtime_s", "device", "compile",
            "compile_step", "export", "evaluate"}
    exclude = {**dict.fromkeys(skip, True), "dataset": {"in_memory": True}}
    return json.dumps(config.model_dump(mode="json", exclude=exclude), sort_keys=True)


class _KnnMonitor:
    def __init__(self, config: TrainConfig, env: DataEnv, image_size: int, mean, std, device, dtype):
        from dcl_core.evaluation.features import extract_features
        from dcl_core.evaluation.knn import knn_accuracy

        self._extract, self._knn = extract_features, knn_accuracy
        mon = config.knn_monitor
        sized = {"image_size": image_size}
        self.train = load_images(mon.train.model_copy(update=sized) if mon.train.image_size is None else mon.train, env)
        self.test = load_images(mon.test.model_copy(update=sized) if mon.test.image_size is None else mon.test, env)
        for name, split in (("train", self.train), ("test", self.test)):
            if split.labels is None:
                raise UserError(f"knn_monitor.{name}: dataset {split.source} has no labels; use class sub-folders or y in the npz")
        self.transform = EvalTransform(image_size, mean, std).to(device)
        self.device, self.dtype, self.mon = device, dtype, mon

    def __call__(self, encoder: nn.Module) -> float:
        was_training = encoder.training
        feats = [self._extract(encoder, s.images, self.transform, device=self.device, dtype=self.dtype) for s in (self.train, self.test)]
        encoder.train(was_training)
        result = self._knn(
            feats[0], self.train.labels.to(self.device), feats[1], self.test.labels.to(self.device),
            k=self.mon.k, temperature=self.mon.temperature,
        )
        return result.accuracy


def fit(config: TrainConfig, run_dir: Path, hooks: Hooks | None = None, env: DataEnv | None = None) -> TrainResult:
    """Pretrain an encoder; resumes from `run_dir/checkpoints/last.pt` when one exists.

    Writes `encoder.safetensors`, `encoder.json`, `metrics.jsonl` and TensorBoard event files
    (`tensorboard/`) into `run_dir`. Under torchrun (an initialised process group) each rank
    trains on its shard of every global batch and the loss gathers negatives across ranks;
    rank 0 writes the files.
    """
    tensorboard = [TensorBoardHooks(Path(run_dir))] if _rank_world()[0] == 0 else []
    try:
        return _fit(config, Path(run_dir), SinkHooks(hooks or NullHooks(), tensorboard), env)
    finally:
        for sink in tensorboard:
            sink.close()


def _fit(config: TrainConfig, run_dir: Path, hooks: Hooks, env: DataEnv | None) -> TrainResult:
    started = time.monotonic()
    env = env or DataEnv()
    rank, world = _rank_world()
    if config.batch_size % world:
        raise UserError(f"batch_size {config.batch_size} must be divisible by the number of GPUs ({world})")
    device = resolve_device(config.device)
    dtype = autocast_dtype(config.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    data = open_images(config.dataset, env)
    image_size = data.image_size
    mean, std = (config.augment.mean, config.augment.std)
    if mean is None or std is None:
        measured = data.channel_stats()
        mean, std = mean or measured[0], std or measured[1]

    torch.manual_seed(config.seed)
    model, small_stem = build_model(config, image_size)
    channels_last = config.channels_last if config.channels_last is not None else device.type == "cuda"
    model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    optimizer = build_optimizer(model, config, device)
    # fp16 needs loss scaling (its small gradients underflow to zero); bf16 and fp32 do not.
    scaler = torch.amp.GradScaler(device.type) if dtype is torch.float16 else None
    loss_fn = build_loss(config)
    augment = SimCLRAugment(config.augment, image_size, mean, std).to(device)

    steps_per_epoch = data.num_images // config.batch_size
    if steps_per_epoch == 0:
        raise UserError(
            f"dataset {data.source} has {data.num_images} images, fewer than batch_size {config.batch_size}; lower batch_size"
        )
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch, total_steps)
    aug_gen = torch.Generator(device=device)

    ckpt_path = run_dir / CHECKPOINT
    step = 0
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        if state.get("config") != _config_fingerprint(config):
            raise UserError(
                f"{ckpt_path} belongs to a run with a different config; use another output folder or delete checkpoints/"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and "scaler" in state:
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])

    train_model: nn.Module = model
    if world > 1:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    use_compile = config.compile if config.compile is not None else device.type == "cuda"
    step_fn = make_train_step(train_model, loss_fn, view_maker(augment, aug_gen), optimizer, scheduler,
                              dtype=dtype, channels_last=channels_last, compile=use_compile, compile_mode=COMPILE_MODE,
                              scaler=scaler, whole=world == 1 and config.compile_step is not False)

    knn = _KnnMonitor(config, env, image_size, mean, std, device, dtype) if config.knn_monitor else None
    is_main = rank == 0
    images = _place_images(data, device) if isinstance(data, ImageSet) else None
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    with _reporting(hooks, MetricsLog(run_dir / METRICS, step, enabled=is_main), ckpt_path, device, is_main) as (
            reports, writer):
        reports.on_start(total_steps, {
            "start_step": step, "steps_per_epoch": steps_per_epoch, "num_images": data.num_images,
            "image_size": image_size, "device": str(device), "world_size": world,
            "in_memory": isinstance(data, ImageSet),
        })
        losses = LossReader(device)
        pending: list[tuple[dict[str, Any], Any]] = []  # logging windows whose loss is still on its way

        def deliver(row: dict[str, Any], handle) -> None:
            row["loss"] = losses.read(handle)
            _check_finite(row["loss"], row["step"])
            reports.row(row)

        def flush_rows() -> None:
            while pending:
                deliver(*pending.pop(0))

        def checkpoint() -> Gate:
            """Copy the state for the writer; the caller opens the gate once the rows up to here are queued."""
            flush_rows()
            if window_steps:  # never save weights a NaN loss has already spoilt
                _check_finite(loss_sum.item() / window_steps, step)
            gate = Gate()
            if writer is not None:
                writer.save({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "step": step, "config": _config_fingerprint(config),
                    **({"scaler": scaler.state_dict()} if scaler is not None else {}),
                }, gate)
            return gate

        def checkpoint_now() -> float:
            began = time.monotonic()
            reports.open_after_queued(checkpoint())
            return time.monotonic() - began

        loss_sum = torch.zeros((), device=device)
        window_steps, window_start = 0, time.monotonic()
        last_checkpoint = time.monotonic()
        compile_s = None
        last: dict[str, Any] = {}
        stopped = False
        model.train()
        while step < total_steps and not stopped:
            epoch = step // steps_per_epoch
            epoch_start, checkpoint_s = time.monotonic(), 0.0
            for batch in _epoch_batches(data, images, config, epoch, step % steps_per_epoch, rank, world, device):
                batch = batch.to(device, non_blocking=True)
                # The views of step s depend on (seed, rank, s) alone: resuming needs no RNG state.
                aug_gen.manual_seed((config.seed * 1_000_003 + step) * 1024 + rank)
                if compile_s is None and use_compile:
                    began = time.monotonic()
                    loss_sum += step_fn(batch)
                    loss_sum.item()  # wait for the first step: its time is the compilation's
                    compile_s = time.monotonic() - began
                else:
                    loss_sum += step_fn(batch)
                step += 1
                window_steps += 1
                reports.check()
                end_of_epoch = step % steps_per_epoch == 0
                if step % config.log_every_steps == 0 or end_of_epoch or step == total_steps:
                    flush_rows()  # the previous window's loss: read one window late, so no wait
                    row = _window_row(window_steps, window_start, config.batch_size, optimizer, step, steps_per_epoch)
                    handle = losses.start(loss_sum, window_steps)
                    loss_sum.zero_()
                    window_steps, window_start = 0, time.monotonic()
                    if not end_of_epoch:
                        pending.append((row, handle))
                    else:  # the epoch's row waits for its kNN and checkpoint times
                        knn_s = 0.0
                        if knn is not None and (epoch + 1) % config.knn_monitor.every_epochs == 0:
                            began = time.monotonic()
                            row["knn_acc"] = knn(model.encoder)
                            knn_s = time.monotonic() - began
                        began = time.monotonic()
                        gate = checkpoint()
                        last_checkpoint = time.monotonic()
                        checkpoint_s += last_checkpoint - began
                        row["epoch_time_s"] = time.monotonic() - epoch_start
                        row.update(train_s=row["epoch_time_s"] - knn_s - checkpoint_s, knn_s=knn_s, checkpoint_s=checkpoint_s)
                        deliver(row, handle)
                        reports.open_after_queued(gate)
                    last = row
                if not end_of_epoch and (step % config.checkpoint_every_steps == 0
                                         or time.monotonic() - last_checkpoint >= config.checkpoint_every_s):
                    checkpoint_s += checkpoint_now()
                    last_checkpoint = time.monotonic()
                if config.max_runtime_s is not None and time.monotonic() - started > config.max_runtime_s:
                    checkpoint_now()
                    raise UserError(
                        f"run exceeded max_runtime_s={config.max_runtime_s:g} at step {step}/{total_steps}; "
                        "raise max_runtime_s or lower epochs (the last checkpoint is kept)"
                    )
                if hooks.should_stop():
                    checkpoint_now()
                    stopped = True
                    break
                if step >= total_steps:
                    break

        result = TrainResult(steps=step, total_steps=total_steps, stopped=stopped, final_metrics=last,
                             warnings=training_advice(config, model.encoder), compile_s=compile_s)
        if not stopped:
            checkpoint_now()
            if is_main:
                result.encoder_sha256 = save_encoder(model.encoder, run_dir, {
                    "encoder": config.encoder, "encoder_kwargs": dict(config.encoder_kwargs), "small_stem": small_stem,
                    "image_size": image_size, "mean": list(mean), "std": list(std),
                    "config": config.model_dump(mode="json"), "metrics": last, "warnings": result.warnings,
                })
                result.warnings += export_formats(run_dir, config.export)
                if config.evaluate is not None:
                    from dcl_core.evaluation.evaluate import evaluate_run

                    result.evaluation = evaluate_run(run_dir, config, env)
    result.seconds = time.monotonic() - started
    return result


@contextlib.contextmanager
def _reporting(hooks: Hooks, metrics_log: MetricsLog, ckpt_path: Path, device: torch.device, is_main: bool):
    """The run's report thread and checkpoint writer (rank 0 writes checkpoints). On the way out
    the write in flight lands (or is discarded by its gate) and every queued row is delivered."""
    reports = HookThread(hooks, metrics_log)
    writer = CheckpointWriter(ckpt_path, reports.on_checkpoint, pin=device.type == "cuda") if is_main else None
    try:
        yield reports, writer
    except BaseException:
        if writer is not None:
            writer.close()
        reports.close(raise_error=False)
        raise
    if writer is not None:
        writer.wait()
    reports.close()


def _check_finite(loss: float, step: int) -> None:
    if not math.isfinite(loss):
        raise UserError(
            f"loss became {loss} by step {step}: training diverged. Lower lr or raise temperature "
            "(a negative DCL/DCLW loss is normal; a NaN/inf is not)"
        )


def _window_row(window_steps, window_start, batch_size, optimizer, step, steps_per_epoch) -> dict[str, Any]:
    """A logging window's metrics; its `loss` is filled in when it has reached the host."""
    elapsed = max(time.monotonic() - window_start, 1e-9)
    return {
        "step": step, "epoch": step / steps_per_epoch, "loss": None,
        "lr": float(optimizer.param_groups[0]["lr"]), "views_per_s": 2 * batch_size * window_steps / elapsed,
    }
