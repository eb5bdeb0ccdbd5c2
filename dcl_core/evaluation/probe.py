"""`run_probe`: the whole evaluation of an exported encoder on a labelled train/test pair:
its features for both splits (`features`), then the linear probe (`linear`) or kNN (`knn`).

Everything runs on the device the features live on (the GPU when there is one), in big
batches, with no host-device synchronisation inside the loops except where torch's L-BFGS
needs a number to decide its next step.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from dcl_core.errors import UserError
from dcl_core.evaluation.features import eval_transform, extract_features, prepare_for_inference, spec_at_encoder_size
from dcl_core.evaluation.knn import knn_accuracy
from dcl_core.evaluation.linear import linear_probe
from dcl_core.evaluation.result import ProbeResult
from dcl_core.hooks import NullHooks, stop_check
from dcl_core.training.device import autocast_dtype, resolve_device

if TYPE_CHECKING:
    from dcl_core.config import DatasetSpec, ProbeConfig
    from dcl_core.data.imageset import ImageSet
    from dcl_core.data.sources import DataEnv

__all__ = ["run_probe", "load_labelled"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_labelled(spec: "DatasetSpec", env: "DataEnv") -> "ImageSet":
    from dcl_core.data.sources import load_images

    images = load_images(spec, env)
    if images.labels is None:
        raise UserError(f"dataset {spec.source} has no labels: use class sub-folders or y in the npz")
    return images


def run_probe(encoder_dir: Path, config: "ProbeConfig", env: "DataEnv", hooks=None) -> ProbeResult:
    """Evaluate the exported encoder in `encoder_dir` on config.train / config.test.

    Returns the result; the caller writes it (e.g. with files.write_json_atomic). Hooks get
    on_start(3, ...), then on_step after each stage: train features, test features, classifier.
    `hooks.should_stop()` is polled between stages, batches and classifier iterations; when it
    says True, StopRequested is raised (there is no partial result).
    """
    from dcl_core.export.encoder import load_encoder

    hooks = hooks if hooks is not None else NullHooks()
    check_stop = stop_check(hooks)
    started = time.perf_counter()
    device = resolve_device(config.device)
    dtype = autocast_dtype(config.precision, device)
    encoder = prepare_for_inference(load_encoder(encoder_dir, device=device), device)
    meta = encoder.meta
    hooks.on_start(3, {"task": "probe", "classifier": config.classifier, "encoder": meta["encoder"]})

    load_started = time.perf_counter()
    check_stop()
    train = load_labelled(spec_at_encoder_size(config.train, meta), env)
    check_stop()
    test = load_labelled(spec_at_encoder_size(config.test, meta), env)
    load_seconds = time.perf_counter() - load_started
    if train.classes and test.classes and list(train.classes) != list(test.classes):
        raise UserError(
            f"train ({config.train.source}) and test ({config.test.source}) have different classes: "
            f"{list(train.classes)} vs {list(test.classes)}"
        )
    classes = list(train.classes) if train.classes else (list(test.classes) if test.classes else None)
    num_classes = len(classes) if classes else None

    def features(images: "ImageSet") -> Tensor:
        transform = eval_transform(images.image_size, meta, device)
        return extract_features(
            encoder, images.images, transform, batch_size=config.batch_size, device=device, dtype=dtype,
            check_stop=check_stop,
        )

    extract_started = time.perf_counter()
    train_x = features(train)
    train_y = train.labels
    del train
    hooks.on_step(1, {"num_train": float(train_x.shape[0])})
    test_x = features(test)
    test_y = test.labels
    del test
    _sync(device)
    extract_seconds = time.perf_counter() - extract_started
    hooks.on_step(2, {"num_test": float(test_x.shape[0]), "extract_seconds": extract_seconds})

    if config.classifier == "knn":
        result = knn_accuracy(
            train_x, train_y, test_x, test_y,
            k=config.k, temperature=config.knn_temperature, num_classes=num_classes, check_stop=check_stop,
        )
    else:
        result = linear_probe(
            train_x, train_y, test_x, test_y,
            num_classes=num_classes, epochs=config.epochs, lr=config.lr,
            weight_decay=config.weight_decay, seed=config.seed, check_stop=check_stop,
        )
    result.classes = classes
    result.classifier_seconds = result.seconds
    result.load_seconds = load_seconds
    result.extract_seconds = extract_seconds
    result.seconds = time.perf_counter() - started
    hooks.on_step(3, {"accuracy": result.accuracy, "seconds": result.seconds})
    return result
