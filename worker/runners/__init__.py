"""Runners: what each job type does on a worker, one module a type, registered with
`@runner("type")`. A runner is called in the pool's child process with the job's typed spec and
a `Run` (its folder, the data environment, the hooks, the storage); dcl_core (and so torch) is
imported inside the runners only.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcl_core.errors import UserError
from dcl_core.jobs import JOB_TYPES


@dataclass
class EngineOutcome:
    """What a job produced. `stopped`: the engine returned early because `hooks.should_stop()`
    said so (the hooks know why)."""

    result: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False


@dataclass
class Run:
    run_dir: Path
    env: Any  # dcl_core.data.sources.DataEnv
    hooks: Any  # dcl_core.hooks.Hooks
    storage: Any  # service.control.storage.LocalStorage

    def encoder_dir(self, encoder_job: str) -> Path:
        """The folder of a succeeded pretrain job's encoder files."""
        folder = self.storage.fetch_job(encoder_job)  # from the object store, when there is one
        if not (folder / "encoder.safetensors").is_file():
            raise UserError(f"encoder_job {encoder_job!r} has no encoder.safetensors; "
                            "name a pretrain job that succeeded")
        return folder


Runner = Callable[[Any, Run], EngineOutcome]
RUNNERS: dict[str, Runner] = {}
"""Job type -> runner; filled by the modules of this package as they are imported."""


def runner(type_name: str) -> Callable[[Runner], Runner]:
    if type_name not in JOB_TYPES or not JOB_TYPES[type_name].runs_on_worker:
        raise ValueError(f"{type_name!r} is not a job type that runs on a worker")

    def register(fn: Runner) -> Runner:
        RUNNERS[type_name] = fn
        return fn

    return register


def load_runners() -> dict[str, Runner]:
    """Import every runner module of this package (each registers itself)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return RUNNERS


def build_data_env(settings):
    """The engine's view of where data lives, from the settings."""
    from dcl_core.data.sources import DataEnv

    return DataEnv(datasets_dir=Path(settings.datasets_dir), torchvision_root=Path(settings.torchvision_root),
                   allow_download=bool(settings.allow_download), cache_dir=Path(settings.cache_dir))


PRELOAD_MODULES = ("dcl_core.training.train", "dcl_core.evaluation.probe", "dcl_core.evaluation.explore", "dcl_core.data.sources", "dcl_core.export.encoder")


def preload() -> dict[str, Any]:
    """Import the engine (torch, torchvision) in the worker's main process, so that every job's
    freshly forked child starts with it loaded instead of importing it anew.

    Importing torch does not initialise CUDA (that happens on the first CUDA call, which only a
    job makes, in its child); the returned facts let the caller log and check that."""
    for name in PRELOAD_MODULES:
        importlib.import_module(name)
    try:  # builtin:digits reads scikit-learn's copy
        importlib.import_module("sklearn.datasets")
    except ImportError:
        pass
    import torch

    return {"torch": torch.__version__, "cuda_initialized": bool(torch.cuda.is_initialized())}
