"""The embed runner: an encoder's features for every image of a dataset (`embeddings.npy`), its
nearest-neighbour index, retrieval scores and 2-D map (`dcl_core.evaluation.explore`)."""

from __future__ import annotations

from dcl_core.hooks import StopRequested
from worker.runners import EngineOutcome, Run, runner


@runner("embed")
def run_embed(spec, run: Run) -> EngineOutcome:
    from dcl_core.evaluation.explore import run_embed_job

    encoder_dir = run.encoder_dir(spec.encoder_job)
    config = spec.embed_config()
    try:
        result = run_embed_job(encoder_dir, config, run.run_dir, run.env, hooks=run.hooks)
    except StopRequested:
        return EngineOutcome(stopped=True)
    return EngineOutcome(result=result)
