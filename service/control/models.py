"""What the repositories return: typed records instead of row dicts.

A `Job` carries its stored spec as JSON (`spec_data`, what the API shows) and as the typed
model of its type (`spec`, parsed once on first use), so the worker and the control plane read
`job.spec.devices` rather than chains of `.get()`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import cached_property
from typing import Any, Mapping, NamedTuple

from pydantic import BaseModel, ValidationError

from dcl_core.jobs import JOB_TYPES, JobKind

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ACTIVE + TERMINAL
PARENT_TYPES = tuple(name for name, kind in JOB_TYPES.items() if kind.has_children)
"""Job types whose rows only gather children: never claimed, not counted as active work."""


class ArtifactFile(NamedTuple):
    """A file a job leaves: recorded in the job store, served by name."""

    name: str
    size: int
    sha256: str


@dataclass(eq=False)
class Job:
    id: str
    owner: str
    type: str
    status: str
    spec_data: dict[str, Any]
    queue: str | None = None
    created_at: datetime | None = None
    enqueued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    attempts: int = 0
    lease_expires_at: datetime | None = None
    heartbeat_at: datetime | None = None
    cancel_requested: bool = False
    step: int = 0
    total_steps: int | None = None
    epoch: float | None = None
    latest_metrics: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    parent_id: str | None = None
    name: str | None = None
    notes: str | None = None
    score: float | None = None
    """The primary score (`service/control/scores.py`)."""
    encoder_job: str | None = None
    tags: list[str] = field(default_factory=list)
    """Sorted; read with the row when the query asks for them (`JobRepo`'s reads do)."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Job:
        values = {f.name: row[f.name] for f in _JOB_FIELDS if f.name in row}
        if isinstance(values.get("tags"), str):  # aggregated in SQL: "a,b" (a tag never holds a comma)
            values["tags"] = sorted(values["tags"].split(","))
        elif values.get("tags") is None:
            values.pop("tags", None)
        return cls(spec_data=row["spec"] or {}, **values)

    @property
    def kind(self) -> JobKind | None:
        return JOB_TYPES.get(self.type)

    @cached_property
    def spec(self) -> BaseModel:
        """The typed spec. A row stored under older, looser rules is read as it is (unvalidated)
        rather than made unreadable."""
        kind = JOB_TYPES[self.type]
        data = {"type": self.type, **self.spec_data}
        try:
            return kind.spec.model_validate(data)
        except ValidationError as exc:
            log.warning("job %s: stored spec no longer validates (%s); read as stored", self.id,
                        exc.errors()[0].get("msg") if exc.errors() else exc)
            return kind.spec.model_construct(**data)

    @property
    def is_parent(self) -> bool:
        return self.type in PARENT_TYPES

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


_JOB_FIELDS = tuple(f for f in fields(Job) if f.name != "spec_data")


@dataclass(frozen=True)
class Dataset:
    id: str
    owner: str
    name: str
    summary: dict[str, Any]
    bytes: int
    created_at: datetime
    sha256: str | None = None
    """Of the dataset's packed form in an object store (its cache key); None in a shared folder."""

    @property
    def num_images(self) -> int | None:
        n = (self.summary or {}).get("num_images")
        return n if isinstance(n, int) else None


@dataclass(frozen=True)
class Artifact:
    name: str
    size: int
    sha256: str
    created_at: datetime | None = None


@dataclass(frozen=True)
class WorkerSighting:
    name: str
    info: dict[str, Any]
    seen_at: datetime


@dataclass
class ChildSummary:
    """A parent's children: how many in each status (and `total`), their summed steps
    (`total_steps` None until each knows its own) and the fraction done."""

    counts: dict[str, int] = field(default_factory=lambda: {"total": 0, **{s: 0 for s in STATUSES}})
    step: int = 0
    total_steps: int | None = 0
    fraction: float | None = None


@dataclass(frozen=True)
class ModelVersion:
    """A registered model's version: a succeeded pretrain job's encoder, its scores (the job's
    `result.scores`) and the sha256 of its `encoder.safetensors`."""

    name: str
    version: int
    job_id: str
    created_at: datetime
    aliases: tuple[str, ...] = ()
    scores: dict[str, Any] = field(default_factory=dict)
    sha256: str | None = None

    @property
    def source(self) -> str:
        """What a probe's or embed's `encoder_job` names to use it."""
        return f"model:{self.name}/{self.version}"


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    created_at: datetime
    latest_version: int | None
    """The newest version's number (None: none left). Numbers are never reused, even after a delete."""
    version_count: int
    aliases: dict[str, int]
    versions: tuple[ModelVersion, ...] = ()
    """Newest first; filled by `ModelRegistry.get`, empty in listings."""


@dataclass(frozen=True)
class Webhook:
    id: str
    owner: str
    url: str
    events: tuple[str, ...]
    secret: str
    created_at: datetime


@dataclass(frozen=True)
class DeliveryAttempt:
    number: int
    at: datetime
    status_code: int | None
    error: str | None
    duration_ms: int


@dataclass(frozen=True)
class Delivery:
    """One event for one webhook: `pending` (sent again at `next_attempt_at`), `delivered`, or
    `failed` (given up)."""

    id: str
    webhook_id: str
    event_id: str
    type: str
    job_id: str
    state: str
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    tries: tuple[DeliveryAttempt, ...] = ()
