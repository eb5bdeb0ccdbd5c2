"""Scoring a pretrain run's encoder when its training ends (`TrainConfig.evaluate`).

The run's exported encoder is probed with `dcl_core.evaluation.probe.run_probe` on the labelled train/test
pair, once a classifier; the scores go into the run's `encoder.json` (`"scores"`) and back to
the caller: `{"scores": {"linear_top1": 0.91, "knn_top1": 0.88}, "evaluation": {"logistic":
ProbeResult.to_dict(), "knn": ..., "retrieval": ...}}` (top-1 accuracies on the test split, fractions 0..1),
plus the test split's retrieval scores (`recall_at_1/5/10`, `map_at_r`: `dcl_core.evaluation.retrieval`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dcl_core.config import ProbeConfig, TrainConfig
from dcl_core.data.sources import DataEnv
from dcl_core.evaluation.probe import run_probe
from dcl_core.export.encoder import META_NAME
from dcl_core.files import write_json_atomic

SCORE_OF = {"logistic": "linear_top1", "knn": "knn_top1"}
"""The score each classifier gives, by the name the job's result and encoder.json use."""


def evaluate_run(run_dir: Path, config: TrainConfig, env: DataEnv) -> dict[str, Any]:
    """Probe the encoder exported in `run_dir` as `config.evaluate` asks; records the scores in
    its encoder.json and returns `{"scores", "evaluation"}`."""
    spec = config.evaluate
    if spec is None:
        raise ValueError("the config has no evaluate block")
    classifiers = ["logistic", "knn"] if spec.classifier == "both" else [spec.classifier]
    evaluation, scores = {}, {}
    for classifier in classifiers:
        probe = ProbeConfig(train=spec.train, test=spec.test, classifier=classifier, device=config.device,
                            precision=config.precision, seed=config.seed)
        result = run_probe(Path(run_dir), probe, env)
        evaluation[classifier] = result.to_dict()
        scores[SCORE_OF[classifier]] = float(result.accuracy)
    if spec.retrieval:
        retrieval = split_retrieval(Path(run_dir), config, env)
        scores.update(retrieval.pop("scores"))
        evaluation["retrieval"] = retrieval
    meta_path = Path(run_dir) / META_NAME
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta["scores"] = scores
    write_json_atomic(meta_path, meta)
    return {"scores": scores, "evaluation": evaluation}


def split_retrieval(run_dir: Path, config: TrainConfig, env: DataEnv) -> dict[str, Any]:
    """The retrieval report (`retrieval_report`) of the test split against itself."""
    from dcl_core.config import EmbedConfig
    from dcl_core.evaluation.embed import embed_images
    from dcl_core.evaluation.retrieval import retrieval_report
    from dcl_core.hooks import NullHooks

    embed = EmbedConfig(data=config.evaluate.test, device=config.device, precision=config.precision)
    embedded = embed_images(run_dir, embed, env, NullHooks(), total_steps=1)
    if embedded.images.labels is None:
        return {"scores": {}}
    return retrieval_report(embedded.features, embedded.images.labels, seed=config.seed)
