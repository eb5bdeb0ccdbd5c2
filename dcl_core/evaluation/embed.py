"""Compute an exported encoder's features for every image of a dataset, saved as .npy.

`run_embed` writes `out_path` (float32, (N, feature_dim), in dataset order) and, when the
dataset has labels, `<stem>_labels.npy` (int64, (N,)) beside it. Both are written
atomically; the features file last, so its presence means the pair is complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dcl_core.hooks import NullHooks, stop_check
from dcl_core.training.device import autocast_dtype, resolve_device

if TYPE_CHECKING:
    import torch

    from dcl_core.config import EmbedConfig
    from dcl_core.data.imageset import ImageSet
    from dcl_core.data.sources import DataEnv

__all__ = ["run_embed", "embed_images", "save_embeddings", "labels_path_for", "save_npy_atomic"]


def labels_path_for(out_path: str | Path) -> Path:
    """`feats.npy` -> `feats_labels.npy`, in the same folder."""
    out_path = Path(out_path)
    return out_path.with_name(f"{out_path.stem}_labels.npy")


def save_npy_atomic(path: str | Path, array: np.ndarray) -> None:
    """np.save into a temp file beside `path`, fsync, then os.replace onto `path`."""
    from dcl_core.files import atomic_open

    with atomic_open(path, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def run_embed(encoder_dir: Path, config: "EmbedConfig", out_path: Path, env: "DataEnv", hooks=None) -> Path:
    """Features of every image of config.data (at the encoder's input size unless the spec
    sets one) as a float32 .npy at `out_path`; labels, if any, beside it. Returns out_path.
    `hooks.should_stop()` is polled between batches; True raises StopRequested, nothing written."""
    hooks = hooks if hooks is not None else NullHooks()
    started = time.perf_counter()
    embedded = embed_images(encoder_dir, config, env, hooks, total_steps=1)
    save_embeddings(out_path, embedded)
    hooks.on_step(1, {"num_images": float(embedded.features.shape[0]), "feature_dim": float(embedded.features.shape[1]),
                      "seconds": time.perf_counter() - started})
    return Path(out_path)


@dataclass
class Embedded:
    """A dataset's features (float32 (N, D), on the device), its images, labels and classes."""

    features: "torch.Tensor"
    images: "ImageSet"
    meta: dict


def embed_images(encoder_dir: Path, config: "EmbedConfig", env: "DataEnv", hooks, total_steps: int) -> Embedded:
    """Loads the encoder and config.data and computes the features (hooks.on_start(total_steps))."""
    from dcl_core.data.sources import load_images
    from dcl_core.evaluation.features import eval_transform, extract_features, prepare_for_inference, spec_at_encoder_size
    from dcl_core.export.encoder import load_encoder

    device = resolve_device(config.device)
    dtype = autocast_dtype(config.precision, device)
    encoder = prepare_for_inference(load_encoder(encoder_dir, device=device), device)
    meta = encoder.meta
    hooks.on_start(total_steps, {"task": "embed", "encoder": meta["encoder"]})
    check_stop = stop_check(hooks)
    check_stop()
    images = load_images(spec_at_encoder_size(config.data, meta), env)
    transform = eval_transform(images.image_size, meta, device)
    feats = extract_features(
        encoder, images.images, transform, batch_size=config.batch_size, device=device, dtype=dtype,
        check_stop=check_stop,
    )
    check_stop()  # nothing is written for a stopped run
    return Embedded(feats, images, meta)


def save_embeddings(out_path: Path, embedded: Embedded) -> None:
    """`out_path` (the features) and, for labelled data, its `_labels.npy` beside it (features last)."""
    out_path = Path(out_path)
    labels = embedded.images.labels
    labels_path = labels_path_for(out_path)
    if labels is not None:
        save_npy_atomic(labels_path, np.ascontiguousarray(labels.cpu().numpy(), dtype=np.int64))
    elif labels_path.exists():
        labels_path.unlink()  # a stale file from an earlier run over labelled data
    save_npy_atomic(out_path, np.ascontiguousarray(embedded.features.cpu().numpy(), dtype=np.float32))
