"""The linear-probe runner: score a pretrain job's encoder on labelled data (`probe.json`)."""

from __future__ import annotations

from dcl_core.files import write_json_atomic
from dcl_core.hooks import StopRequested
from worker.runners import EngineOutcome, Run, runner


@runner("linear_probe")
def run_linear_probe(spec, run: Run) -> EngineOutcome:
    from dcl_core.evaluation.probe import run_probe

    encoder_dir = run.encoder_dir(spec.encoder_job)
    config = spec.probe_config()
    try:
        result = run_probe(encoder_dir, config, run.env, hooks=run.hooks)
    except StopRequested:  # cancelled or out of time: the hooks know which
        return EngineOutcome(stopped=True)
    payload = result.to_dict()
    if not (run.run_dir / "probe.json").exists():
        write_json_atomic(run.run_dir / "probe.json", payload)
    return EngineOutcome(result=payload)
