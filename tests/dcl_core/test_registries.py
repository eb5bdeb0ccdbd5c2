"""The job type and method registries: every reader takes its list from them."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import TypeAdapter, ValidationError

from dcl_core.config import TrainConfig
from dcl_core.jobtypes import JOB_TYPES, JobSpec
from dcl_core.training.methods import METHODS


def test_every_job_type_is_one_entry_with_a_matching_spec_model():
    adapter = TypeAdapter(JobSpec)
    for name, kind in JOB_TYPES.items():
        assert kind.spec.model_fields["type"].default == name
        assert (kind.runner is None) == kind.has_children  # a parent never runs on a worker itself
    assert adapter.validate_python({"type": "pretrain"}).type == "pretrain"
    with pytest.raises(ValidationError):
        adapter.validate_python({"type": "finetune"})


def test_the_worker_has_a_runner_for_every_runnable_type():
    from worker.engine import RUNNERS

    assert set(RUNNERS) == {name for name, kind in JOB_TYPES.items() if kind.runner}


def test_api_schema_and_cli_take_the_types_from_the_registry():
    from service import cli
    from service.schemas import JobType

    assert set(JobType.__args__) == set(JOB_TYPES)
    assert cli.JOB_TYPES is JOB_TYPES


def test_queue_rule_comes_from_the_job_type():
    from service.queue import queue_for
    from service.settings import Settings

    settings = Settings()
    assert queue_for({"type": "pretrain", "config": {"device": "cpu"}}, settings) == settings.cpu_queue
    assert queue_for({"type": "embed", "device": "auto"}, settings) == settings.gpu_queue
    assert queue_for({"type": "sweep", "config": {"device": "cpu"}}, settings) is None


def test_method_names_are_validated_from_the_table_and_build_their_loss():
    from dcl_core.training.losses import build_loss

    for name, method in METHODS.items():
        loss = build_loss(TrainConfig(method=name))
        assert type(loss).__name__ == method.loss.partition(":")[2]
    with pytest.raises(ValidationError, match="dcl"):
        TrainConfig(method="byol")
    assert build_loss(TrainConfig(method="dclw", sigma=0.3)).sigma == 0.3


def test_reading_the_registries_does_not_import_torch():
    code = "import sys, dcl_core.jobtypes, dcl_core.training.methods, dcl_core.experiments.sweep; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
