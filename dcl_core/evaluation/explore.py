"""The embed job: a dataset's features, and what makes them usable (`run_embed_job`):

- `embeddings.npy` (+ `embeddings_labels.npy`): the raw features, as `dcl embed` writes them;
- the nearest-neighbour index (`dcl_core.evaluation.index`: `index.npy`, `index.json`, IVF files);
- retrieval scores of labelled data (`dcl_core.evaluation.retrieval`);
- the 2-D map (`map.npy` (M, 2) float32, `map_items.npy` (M,) int32 item of each point,
  `map_labels.npy` (M,) int32 label, -1 for unlabelled data) and the TensorBoard projector files
  in `tensorboard/` (`dcl_core.evaluation.maps`).

The job's result says what was made: `{"embeddings", "shape", "dtype", "image_size", "index",
"map", "projector", "scores", "retrieval", "classes", "warnings"}`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dcl_core.evaluation import index as index_files
from dcl_core.evaluation.embed import embed_images, save_embeddings, save_npy_atomic
from dcl_core.hooks import NullHooks, stop_check
from dcl_core.tracking import TENSORBOARD_DIR

if TYPE_CHECKING:
    from dcl_core.config import EmbedConfig
    from dcl_core.data.sources import DataEnv

EMBEDDINGS = "embeddings.npy"
MAP = "map.npy"
MAP_ITEMS = "map_items.npy"
MAP_LABELS = "map_labels.npy"
MAX_CLASS_NAMES = 1000
"""Class names listed in the result (a larger set is counted, not listed: the result stays small)."""


def run_embed_job(encoder_dir: Path, config: "EmbedConfig", run_dir: Path, env: "DataEnv",
                  hooks=None, exact_max: int = index_files.EXACT_MAX) -> dict[str, Any]:
    """Everything an embed job writes into run_dir (see the module docstring); returns its result.
    Steps: 1 features, 2 index and scores, 3 map. Raises StopRequested when told to stop."""
    from dcl_core.evaluation.index_build import write_index
    from dcl_core.evaluation.maps import project_2d, write_projector
    from dcl_core.evaluation.retrieval import retrieval_report

    hooks = hooks if hooks is not None else NullHooks()
    check_stop = stop_check(hooks)
    run_dir = Path(run_dir)
    started = time.perf_counter()
    embedded = embed_images(encoder_dir, config, env, hooks, total_steps=3)
    features, images = embedded.features, embedded.images
    n, dim = int(features.shape[0]), int(features.shape[1])
    save_embeddings(run_dir / EMBEDDINGS, embedded)
    labels = images.labels.cpu().numpy() if images.labels is not None else None
    classes = list(images.classes) if images.classes else None
    result: dict[str, Any] = {"embeddings": EMBEDDINGS, "shape": [n, dim], "dtype": "float32",
                              "image_size": int(images.image_size), "warnings": []}
    if classes is not None:
        result["num_classes"] = len(classes)
        result["classes"] = classes[:MAX_CLASS_NAMES]
    hooks.on_step(1, {"num_images": float(n), "feature_dim": float(dim), "seconds": time.perf_counter() - started})

    check_stop()
    build_index = config.index if config.index is not None else n <= index_files.MAX_ITEMS
    if build_index:
        result["index"] = write_index(run_dir, features, seed=config.seed, exact_max=exact_max)
        if labels is not None:
            report = retrieval_report(features, images.labels, seed=config.seed)
            result["scores"] = report.pop("scores")
            result["retrieval"] = report
    hooks.on_step(2, {"seconds": time.perf_counter() - started,
                      **{k: float(v) for k, v in (result.get("scores") or {}).items()}})

    check_stop()
    if config.map != "none":
        points, items, facts = project_2d(features, config.map, seed=config.seed)
        save_npy_atomic(run_dir / MAP_ITEMS, items.astype(np.int32))
        save_npy_atomic(run_dir / MAP_LABELS, (labels[items] if labels is not None else np.full(len(items), -1)).astype(np.int32))
        save_npy_atomic(run_dir / MAP, points)
        if "warning" in facts:
            result["warnings"].append(facts.pop("warning"))
        result["map"] = {**facts, "file": MAP, "items": MAP_ITEMS, "labels": MAP_LABELS}
        features_np = np.asarray(features.float().cpu().numpy())
        result["projector"] = {**write_projector(run_dir / TENSORBOARD_DIR, features_np, items, labels, classes,
                                                 images.images), "folder": TENSORBOARD_DIR}
    hooks.on_step(3, {"seconds": time.perf_counter() - started})
    return result

