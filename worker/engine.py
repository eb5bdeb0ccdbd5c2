"""What each job type runs: one function per `type`, called in the pool's child process.

`RUNNERS` maps a job's `type` (its `runner` in `dcl_core.jobtypes`) to a function `(spec, run_dir, env, hooks, settings) ->
EngineOutcome`. dcl_core (and so torch) is imported inside the functions only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcl_core.errors import UserError
from dcl_core.files import write_json_atomic
from dcl_core.hooks import StopRequested


@dataclass
class EngineOutcome:
    """What a job produced. `stopped`: the engine returned early because
    `hooks.should_stop()` said so (the hooks know why)."""

    result: dict[str, Any] = field(default_factory=dict)
    stopped: bool = False


def build_data_env(settings):
    """The engine's view of where data lives, from the service's settings."""
    from dcl_core.data.sources import DataEnv

    data_dir = Path(settings.data_dir)
    torchvision_root = getattr(settings, "torchvision_root", None) or data_dir / "torchvision"
    cache_dir = getattr(settings, "cache_dir", None) or data_dir / "cache"
    return DataEnv(
        datasets_dir=Path(settings.datasets_dir),
        torchvision_root=Path(torchvision_root),
        allow_download=bool(getattr(settings, "allow_download", False)),
        cache_dir=Path(cache_dir),
    )


def _encoder_dir(spec: dict, settings) -> Path:
    encoder_job = spec.get("encoder_job")
    if not encoder_job:
        raise UserError("the job names no encoder_job (the id of a succeeded pretrain job)")
    encoder_dir = Path(settings.artifacts_dir) / encoder_job
    if not (encoder_dir / "encoder.safetensors").is_file():
        raise UserError(
            f"encoder_job {encoder_job!r} has no encoder.safetensors; name a pretrain job that succeeded"
        )
    return encoder_dir


def _without(spec: dict, *keys: str) -> dict:
    return {key: value for key, value in spec.items() if key not in keys}


def run_pretrain(spec: dict, run_dir: Path, env, hooks, settings) -> EngineOutcome:
    from dcl_core.config import TrainConfig
    from dcl_core.training.train import fit

    config = TrainConfig.model_validate(spec.get("config", {}))
    devices = int((spec.get("resources") or {}).get("gpus") or 1)
    if devices > 1:
        from worker.distributed import run_distributed

        result, stopped = run_distributed(config.model_dump(mode="json"), run_dir, env, hooks, devices)
        return EngineOutcome(result=result, stopped=stopped)
    result = fit(config, run_dir, hooks=hooks, env=env)
    return EngineOutcome(
        result={"final_metrics": dict(result.final_metrics), "steps": int(result.steps),
                **({"warnings": list(result.warnings)} if result.warnings else {}), **(result.evaluation or {})},
        stopped=bool(result.stopped),
    )


def run_linear_probe(spec: dict, run_dir: Path, env, hooks, settings) -> EngineOutcome:
    from dcl_core.config import ProbeConfig
    from dcl_core.evaluation.probe import run_probe

    encoder_dir = _encoder_dir(spec, settings)
    config = ProbeConfig.model_validate(_without(spec, "type", "encoder_job"))
    try:
        result = run_probe(encoder_dir, config, env, hooks=hooks)
    except StopRequested:  # cancelled or out of time: the hooks know which
        return EngineOutcome(stopped=True)
    payload = result.to_dict()
    if not (run_dir / "probe.json").exists():
        write_json_atomic(run_dir / "probe.json", payload)
    return EngineOutcome(result=payload)


def run_embed(spec: dict, run_dir: Path, env, hooks, settings) -> EngineOutcome:
    from dcl_core.config import EmbedConfig
    from dcl_core.evaluation.embed import run_embed as embed

    encoder_dir = _encoder_dir(spec, settings)
    config = EmbedConfig.model_validate(_without(spec, "type", "encoder_job"))
    try:
        out_path = embed(encoder_dir, config, run_dir / "embeddings.npy", env, hooks=hooks)
    except StopRequested:
        return EngineOutcome(stopped=True)
    result: dict[str, Any] = {"embeddings": Path(out_path).name}
    try:
        import numpy as np

        array = np.load(out_path, mmap_mode="r")
        result["shape"] = list(array.shape)
        result["dtype"] = str(array.dtype)
    except Exception:  # the file is listed as an artifact either way
        pass
    return EngineOutcome(result=result)


PRELOAD_MODULES = ("dcl_core.training.train", "dcl_core.evaluation.probe", "dcl_core.evaluation.embed", "dcl_core.data.sources", "dcl_core.export.encoder")


def preload() -> dict[str, Any]:
    """Import the engine (torch, torchvision) in the worker's main process, so that every
    job's freshly forked child starts with it loaded instead of importing it anew.

    Importing torch does not initialise CUDA (that happens on the first CUDA call, which
    only a job makes, in its child); the returned facts let the caller log and check that.
    """
    import importlib

    for name in PRELOAD_MODULES:
        importlib.import_module(name)
    try:  # builtin:digits reads scikit-learn's copy
        importlib.import_module("sklearn.datasets")
    except ImportError:
        pass
    import torch

    return {"torch": torch.__version__, "cuda_initialized": bool(torch.cuda.is_initialized())}


Runner = Callable[[dict, Path, Any, Any, Any], EngineOutcome]

def _runners() -> dict[str, Runner]:
    from dcl_core.jobtypes import JOB_TYPES
    from dcl_core.lazy import load

    return {name: load(kind.runner) for name, kind in JOB_TYPES.items() if kind.runner is not None}


RUNNERS: dict[str, Runner] = _runners()
"""Job type -> runner, from the job type registry (`dcl_core.jobtypes`)."""
