"""Compute an exported encoder's features for every image of a dataset, saved as .npy.

`run_embed` writes `out_path` (float32, (N, feature_dim), in dataset order) and, when the
dataset has labels, `<stem>_labels.npy` (int64, (N,)) beside it. Both are written
atomically; the features file last, so its presence means the pair is complete.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dcl_core.hooks import NullHooks, stop_check
from dcl_core.training.device import autocast_dtype, resolve_device

if TYPE_CHECKING:
    from dcl_core.config import EmbedConfig
    from dcl_core.data.sources import DataEnv

__all__ = ["run_embed", "labels_path_for", "save_npy_atomic"]


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
    from dcl_core.data.sources import load_images
    from dcl_core.evaluation.features import eval_transform, extract_features, prepare_for_inference, spec_at_encoder_size
    from dcl_core.export.encoder import load_encoder

    hooks = hooks if hooks is not None else NullHooks()
    out_path = Path(out_path)
    started = time.perf_counter()
    device = resolve_device(config.device)
    dtype = autocast_dtype(config.precision, device)
    encoder = prepare_for_inference(load_encoder(encoder_dir, device=device), device)
    meta = encoder.meta
    hooks.on_start(1, {"task": "embed", "encoder": meta["encoder"]})

    check_stop = stop_check(hooks)
    check_stop()
    spec = spec_at_encoder_size(config.data, meta)
    images = load_images(spec, env)
    transform = eval_transform(images.image_size, meta, device)
    feats = extract_features(
        encoder, images.images, transform, batch_size=config.batch_size, device=device, dtype=dtype,
        check_stop=check_stop,
    )
    check_stop()  # nothing is written for a stopped run
    array = np.ascontiguousarray(feats.cpu().numpy(), dtype=np.float32)
    del feats

    labels_path = labels_path_for(out_path)
    if images.labels is not None:
        save_npy_atomic(labels_path, np.ascontiguousarray(images.labels.cpu().numpy(), dtype=np.int64))
    elif labels_path.exists():
        labels_path.unlink()  # a stale file from an earlier run over labelled data
    save_npy_atomic(out_path, array)
    hooks.on_step(
        1,
        {"num_images": float(array.shape[0]), "feature_dim": float(array.shape[1]),
         "seconds": time.perf_counter() - started},
    )
    return out_path
