"""The job type and method registries: every reader takes its list from them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import TypeAdapter, ValidationError

from dcl_core.config import TrainConfig
from dcl_core.jobs import JOB_TYPES, JobSpec
from dcl_core.training.methods import METHODS


def test_every_job_type_is_one_entry_with_a_matching_spec_model():
    adapter = TypeAdapter(JobSpec)
    for name, kind in JOB_TYPES.items():
        assert kind.spec.model_fields["type"].default == name
        assert kind.runs_on_worker == (not kind.has_children)  # a parent never runs on a worker itself
        assert kind.has_children == hasattr(kind.spec, "child_specs")  # and says what it makes
    assert adapter.validate_python({"type": "pretrain"}).type == "pretrain"
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "finetune"})


def test_the_worker_has_a_runner_for_every_runnable_type():
    from worker.runners import load_runners, runner

    assert set(load_runners()) == {name for name, kind in JOB_TYPES.items() if kind.runs_on_worker}
    with pytest.raises(ValueError):
        runner("sweep")  # a parent type has no runner


def test_api_schema_takes_the_types_from_the_registry():  # the CLI's: test_cli_first_hour
    from service.api.schemas import JobType

    assert set(JobType.__args__) == set(JOB_TYPES)


def test_queue_rule_comes_from_the_job_type():
    from service.control.queue import queue_for
    from service.control.settings import Settings

    settings = Settings()
    spec = TypeAdapter(JobSpec).validate_python
    assert queue_for(spec({"type": "pretrain", "config": {"device": "cpu"}}), settings) == settings.cpu_queue
    assert queue_for(spec({"type": "embed", "device": "auto", "encoder_job": "job_0123abcd", "data": "builtin:digits"}),
                     settings) == settings.gpu_queue
    assert queue_for(spec({"type": "sweep", "config": {"device": "cpu"}, "grid": {"seed": [0]}}), settings) is None


def test_method_names_are_validated_from_the_table_and_build_their_loss():
    from dcl_core.training.losses import build_loss

    for name, method in METHODS.items():
        loss = build_loss(TrainConfig(method=name))
        assert type(loss).__name__ == method.loss.partition(":")[2]
    with pytest.raises(ValidationError, match="dcl"):
        TrainConfig(method="byol")
    assert build_loss(TrainConfig(method="dclw", sigma=0.3)).sigma == 0.3


def test_reading_the_registries_does_not_import_torch():
    code = "import sys, dcl_core.jobs, dcl_core.training.methods, dcl_core.experiments.sweep; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
