"""Whether the service takes a job: the checks every request gets (finite numbers, no NUL bytes,
a worker that can run it, the key's caps) and its type's own rule (`JobKind.admit`, a pure
function of the spec and `ApiContext`). A refusal names the field and the fix; nothing here
writes anything.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dcl_core.data.catalog import missing_torchvision_files
from dcl_core.jobs import JOB_TYPES, Refusal
from dcl_core.jobs.base import parse_model_ref
from dcl_core.models.timm_kwargs import estimated_params
from service.api.guards import has_nul
from service.control.plane import ControlPlane
from service.control.queue import multi_device_queue, queue_for


class TooMany(Exception):
    """Over one of the key's caps (active jobs, stored bytes): a 429 with `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: int = 60):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ApiContext:
    """What an admission rule may ask of the world, answered from the control plane."""

    def __init__(self, owner: str, plane: ControlPlane):
        self.owner = owner
        self.plane = plane
        self.allow_download = bool(plane.settings.allow_download)

    def dataset_images(self, dataset_id: str) -> int | None:
        dataset = self.plane.datasets.get(dataset_id, self.owner)
        if dataset is None:
            raise LookupError(dataset_id)
        return dataset.num_images

    def torchvision_missing(self, name: str, split: str) -> bool:
        return bool(missing_torchvision_files(Path(self.plane.settings.torchvision_root), name, split))

    def job_state(self, job_id: str) -> tuple[str, str] | None:
        job = self.plane.jobs.get(job_id, self.owner)
        return (job.type, job.status) if job is not None else None


def admit(spec: BaseModel, owner: str, plane: ControlPlane) -> int:
    """Refusal or TooMany unless the job can be taken; returns how many jobs it queues."""
    dumped = spec.model_dump(exclude={"type"})
    bad = non_finite(dumped)
    if bad:
        raise Refusal(bad, "must be a finite number (not NaN or infinity)")
    bad = has_nul(dumped)
    if bad is not None:
        raise Refusal(bad or "body", "contains a NUL byte (\\0); remove it")
    kind = JOB_TYPES[spec.type]
    kind.admit(spec, ApiContext(owner, plane))
    members = spec.child_specs() if kind.has_children else [spec]
    for member in members:
        check_devices(member, plane)
        check_model_size(member, plane.settings.max_model_params)
    check_room(plane, owner, len(members))
    stored = plane.datasets.stored_bytes(owner)
    limit = plane.settings.max_stored_bytes_per_key
    if stored >= limit:
        raise TooMany(f"this key stores {stored} bytes, its limit is {limit}; delete datasets you no longer need",
                      3600)
    return len(members)


def resolve_models(spec: BaseModel, owner: str, plane: ControlPlane) -> BaseModel:
    """The spec with a registered model its `encoder_job` names (`model:NAME@ALIAS`, `model:NAME/N`)
    resolved, now, to the version's job id, and the reference kept in `encoder_model`: the job runs
    the encoder the alias pointed at when it was submitted, wherever the alias moves later."""
    ref = getattr(spec, "encoder_job", None)
    if not isinstance(ref, str) or "encoder_model" not in type(spec).model_fields:
        return spec
    model = parse_model_ref(ref)
    if model is None:
        return spec.model_copy(update={"encoder_model": None}) if spec.encoder_model is not None else spec
    version = plane.registry.resolve(owner, model)
    if version is None:
        what = f"has no alias {model.alias!r}" if model.alias else f"has no version {model.version}"
        if plane.registry.get(owner, model.name) is None:
            what = "is not registered (GET /v1/models lists yours)"
        raise Refusal("encoder_job", f"encoder_job {ref}: model {model.name} {what}", 404)
    return spec.model_copy(update={"encoder_job": version.job_id, "encoder_model": ref})


def non_finite(value: Any, path: str = "") -> str | None:
    """The path of the first NaN or infinity in a dumped request (JSON cannot carry them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "body"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = non_finite(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


def check_devices(spec: BaseModel, plane: ControlPlane) -> None:
    """A job on N > 1 devices needs a worker that consumes its queue (one with N or more devices):
    it waits for one that is busy, and is refused when no such worker has been seen lately."""
    if spec.devices <= 1:
        return
    settings = plane.settings
    queue = queue_for(spec, settings)
    base = queue.rsplit("-x", 1)[0]
    most = 0
    for worker in plane.workers.seen_within(settings.worker_seen_seconds):
        queues = str(worker.info.get("queues") or "").split(",")
        if queue in queues:
            return
        most = max([most] + [n for n in range(1, 65) if multi_device_queue(base, n) in queues])
    kind = "GPU" if base == settings.gpu_queue else "device"
    raise Refusal("resources.gpus", (
        f"no worker can run a job on {spec.devices} {kind}s: the workers seen in the last "
        f"{settings.worker_seen_seconds:g} s offer at most {most} on the {base!r} queue. Lower resources.gpus, "
        f"or start a worker with that many (dcl worker --gpus {','.join(str(i) for i in range(spec.devices))})"))


def check_model_size(spec: BaseModel, max_params: int) -> None:
    """A pretrain config whose timm encoder_kwargs make a model over `max_params` parameters (a cheap
    estimate: `timm_kwargs.estimated_params`) is refused before a worker tries to allocate it."""
    config = getattr(spec, "config", None)
    kwargs = getattr(config, "encoder_kwargs", None)
    params = estimated_params(kwargs) if kwargs else None
    if params is not None and params > max_params:
        raise Refusal("config.encoder_kwargs", (
            f"embed_dim, depth and mlp_ratio make a model of about {params:,} parameters, over this server's "
            f"limit of {max_params:,} (DCL_MAX_MODEL_PARAMS); use a smaller embed_dim or depth"))


def check_room(plane: ControlPlane, owner: str, wanted: int) -> None:
    """TooMany unless `wanted` more queued jobs fit under the key's active-jobs cap (children count)."""
    active, cap = plane.jobs.count_active(owner), plane.settings.max_active_jobs_per_key
    if active + wanted > cap:
        more = f"{wanted} more jobs" if wanted > 1 else "another job"
        raise TooMany(f"this key has {active} queued or running jobs and its limit is {cap}; {more} would pass "
                      "it. Wait for some to end, cancel some, or make the sweep smaller")
