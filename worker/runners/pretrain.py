"""The pretrain runner: `fit` on one device, or under torchrun on several (worker.distributed);
both end with the same result (`pretrain_result`)."""

from __future__ import annotations

from typing import Any

from worker.runners import EngineOutcome, Run, runner


def pretrain_result(summary: dict[str, Any], devices: int = 1) -> dict[str, Any]:
    """The job's result from a run's summary (`steps`, `final_metrics`, `warnings`, `evaluation`:
    `{"scores", "evaluation"}` when the config has an `evaluate` block; `compile_s`, the first
    step's wall time, when the run compiled its step)."""
    result: dict[str, Any] = {"final_metrics": dict(summary.get("final_metrics") or {}),
                              "steps": int(summary.get("steps") or 0)}
    if devices > 1:
        result["devices"] = devices
    if summary.get("compile_s") is not None:
        result["compile_s"] = float(summary["compile_s"])
    if summary.get("warnings"):
        result["warnings"] = list(summary["warnings"])
    result.update(summary.get("evaluation") or {})
    return result


def run_summary(train_result) -> dict[str, Any]:
    """A `dcl_core.training.train.TrainResult` as plain data (what rank 0 of a torchrun hands back too)."""
    return {"steps": int(train_result.steps), "final_metrics": dict(train_result.final_metrics),
            "warnings": list(train_result.warnings), "evaluation": train_result.evaluation,
            "stopped": bool(train_result.stopped), "compile_s": train_result.compile_s}


@runner("pretrain")
def run_pretrain(spec, run: Run) -> EngineOutcome:
    if spec.devices > 1:
        from worker.distributed import run_distributed

        summary = run_distributed(spec.config.model_dump(mode="json"), run.run_dir, run.env, run.hooks, spec.devices)
    else:
        from dcl_core.training.train import fit

        summary = run_summary(fit(spec.config, run.run_dir, hooks=run.hooks, env=run.env))
    return EngineOutcome(result=pretrain_result(summary, spec.devices), stopped=summary["stopped"])
