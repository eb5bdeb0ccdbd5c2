"""A pretrain job's result from the engine's run summary."""

from dcl_core.training.train import TrainResult
from worker.runners.pretrain import pretrain_result, run_summary


def test_the_result_reports_compile_s_when_the_step_was_compiled():
    compiled = run_summary(TrainResult(steps=4, total_steps=4, stopped=False, final_metrics={"loss": 1.0}, compile_s=41.5))
    assert pretrain_result(compiled) == {"final_metrics": {"loss": 1.0}, "steps": 4, "compile_s": 41.5}
    eager = run_summary(TrainResult(steps=4, total_steps=4, stopped=False))
    assert "compile_s" not in pretrain_result(eager)
