"""The registry of job types: one module of this package a type, holding its spec model, its
admission rule and its `KIND`; adding a module adds the type. Read by config validation
(`JobSpec`), the API (schemas, admission), the CLI, the queue and the worker (which registers a
runner for each type that runs on a worker). Imports no torch and names no module of the
service or the worker.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Annotated, Literal, Union

from pydantic import Field

from dcl_core.jobs.base import AdmissionContext, JobKind, Refusal

__all__ = ["JOB_TYPES", "AdmissionContext", "JobKind", "JobSpec", "JobTypeName", "Refusal"]


def _kinds() -> list[JobKind]:
    kinds = []
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            kinds.append(importlib.import_module(f"{__name__}.{module.name}").KIND)
    return sorted(kinds, key=lambda kind: (kind.order, kind.name))


JOB_TYPES: dict[str, JobKind] = {kind.name: kind for kind in _kinds()}

JobTypeName = Literal[tuple(JOB_TYPES)]  # type: ignore[valid-type]

JobSpec = Annotated[Union[tuple(kind.spec for kind in JOB_TYPES.values())], Field(discriminator="type")]
"""A job request: any registered type's spec, chosen by its `type`."""
