"""The registry of job types: one `JobKind` entry each, read by config validation (`JobSpec`),
the API's schemas and routes, the CLI and the worker instead of each listing the types.
Imports no torch: runners are named as `module:function` strings and imported by the worker.

Adding a job type: its spec model and runner in their own modules, and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field

from dcl_core.config import EmbedJob, PretrainJob, ProbeJob


def _config_device(spec: dict) -> str:
    return "cpu" if str((spec.get("config") or {}).get("device", "auto")) == "cpu" else "gpu"


def _own_device(spec: dict) -> str:
    return "cpu" if str(spec.get("device", "auto")) == "cpu" else "gpu"


@dataclass(frozen=True)
class JobKind:
    name: str
    spec: type[BaseModel]
    """The request model; its `type` field is `Literal[name]` (the union's discriminator)."""
    runner: str | None
    """`module:function` the worker calls, `(spec, run_dir, env, hooks, settings) -> EngineOutcome`;
    None for a job that never runs on a worker itself (a parent of other jobs)."""
    queue: Callable[[dict], str] | None
    """Which kind of queue (`gpu` or `cpu`) a stored spec goes to; None: never queued."""
    can_stop: bool
    """Honours `should_stop` mid-run (cancel and time caps take effect before the end)."""
    has_children: bool = False
    """Creates child jobs at submit (its spec's `child_specs()`); its status and result follow
    theirs (`service.sweeps.settle`)."""
    about: str = ""


def _kinds() -> tuple[JobKind, ...]:
    from dcl_core.experiments.sweep import SweepJob

    return (
        JobKind("pretrain", PretrainJob, "worker.engine:run_pretrain", _config_device, can_stop=True,
                about="pretrain an encoder (a TrainConfig)"),
        JobKind("linear_probe", ProbeJob, "worker.engine:run_linear_probe", _own_device, can_stop=False,
                about="score a pretrain job's encoder on labelled data"),
        JobKind("embed", EmbedJob, "worker.engine:run_embed", _own_device, can_stop=False,
                about="a pretrain job's encoder's features for every image of a dataset"),
        JobKind("sweep", SweepJob, None, None, can_stop=True, has_children=True,
                about="one pretrain job per point of a grid over TrainConfig fields, and their table"),
    )


JOB_TYPES: dict[str, JobKind] = {kind.name: kind for kind in _kinds()}

JobTypeName = Literal[tuple(JOB_TYPES)]  # type: ignore[valid-type]

JobSpec = Annotated[Union[tuple(kind.spec for kind in JOB_TYPES.values())], Field(discriminator="type")]
"""A job request: any registered type's spec, chosen by its `type`."""
