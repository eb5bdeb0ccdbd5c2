"""The embed runner: an encoder's features for every image of a dataset (`embeddings.npy`)."""

from __future__ import annotations

from typing import Any

from dcl_core.hooks import StopRequested
from worker.runners import EngineOutcome, Run, runner


@runner("embed")
def run_embed(spec, run: Run) -> EngineOutcome:
    import numpy as np

    from dcl_core.config import EmbedConfig
    from dcl_core.evaluation.embed import run_embed as embed

    encoder_dir = run.encoder_dir(spec.encoder_job)
    config = EmbedConfig.model_validate(spec.model_dump(exclude={"type", "encoder_job"}))
    try:
        out_path = embed(encoder_dir, config, run.run_dir / "embeddings.npy", run.env, hooks=run.hooks)
    except StopRequested:
        return EngineOutcome(stopped=True)
    array = np.load(out_path, mmap_mode="r")
    result: dict[str, Any] = {"embeddings": out_path.name, "shape": list(array.shape), "dtype": str(array.dtype)}
    return EngineOutcome(result=result)
