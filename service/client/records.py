"""What the client returns: the API's JSON objects as `Record`s, dicts whose keys are also typed
attributes (`job.status` and `job["status"]` alike), so they print, compare and `json.dumps`
as the service sent them. Fields a newer server adds come through too (as keys and
attributes), untyped. Timestamps stay ISO 8601 strings.

One exception: a page's `items` is also a dict method, so a page is read `page["items"]`
(or with the client's `iter_*` methods, which page for you).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Record(dict):
    """A JSON object of the API; its keys are attributes too."""

    nested: ClassVar[dict[str, type[Record]]] = {}
    """Fields holding another record (or a list of them), made into that record type."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} has no field {name!r}") from None

    @classmethod
    def of(cls, data: dict[str, Any]) -> Record:
        record = cls(data)
        for key, kind in cls.nested.items():
            value = record.get(key)
            if isinstance(value, dict):
                record[key] = kind.of(value)
            elif isinstance(value, list):
                record[key] = [kind.of(v) if isinstance(v, dict) else v for v in value]
        return record


T = TypeVar("T", bound=Record)


class Page(Record, Generic[T]):
    """One page of a listing: `page["items"]`, and `total`, `limit`, `offset`."""

    total: int
    limit: int
    offset: int

    @classmethod
    def of_items(cls, data: dict[str, Any], kind: type[T]) -> Page[T]:
        page = cls(data)
        page["items"] = [kind.of(item) for item in data.get("items", [])]
        return page


class Progress(Record):
    step: int
    total_steps: int | None
    epoch: float | None
    fraction: float | None
    elapsed_s: float | None
    eta_s: float | None


class Job(Record):
    """A job as `GET /v1/jobs/{id}` shows it."""

    nested = {"progress": Progress}
    id: str
    type: str
    status: JobStatus
    spec: dict[str, Any]
    created_at: str
    started_at: str | None
    finished_at: str | None
    worker: str | None
    attempts: int
    cancel_requested: bool
    progress: Progress
    latest_metrics: dict[str, Any] | None
    result: dict[str, Any] | None
    error: str | None
    parent: str | None
    children: dict[str, int] | None

    @property
    def done(self) -> bool:
        return self["status"] in ("succeeded", "failed", "cancelled")


class Dataset(Record):
    id: str
    name: str
    bytes: int
    created_at: str
    summary: dict[str, Any]
    source: str
    """What a job names to use it: dataset:ID."""


class Artifact(Record):
    name: str
    size: int
    sha256: str
    created_at: str | None
    url: str


class ModelVersion(Record):
    name: str
    version: int
    job: str
    created_at: str
    aliases: list[str]
    scores: dict[str, float]
    sha256: str | None
    source: str
    """What a probe's or embed's `encoder_job` names: model:NAME/VERSION."""
    url: str


class Model(Record):
    nested = {"versions": ModelVersion}
    name: str
    created_at: str
    latest_version: int | None
    aliases: dict[str, int]
    version_count: int
    versions: list[ModelVersion]


class Alias(Record):
    name: str
    alias: str
    version: int


class Webhook(Record):
    id: str
    url: str
    events: list[str]
    created_at: str
    secret: str | None
    """Only in the answer that made it."""


class Attempt(Record):
    number: int
    at: str
    status_code: int | None
    error: str | None
    duration_ms: int


class Delivery(Record):
    nested = {"attempts": Attempt}
    id: str
    event_id: str
    type: str
    job: str
    state: Literal["pending", "delivered", "failed"]
    next_attempt_at: str | None
    created_at: str
    finished_at: str | None
    attempts: list[Attempt]


@dataclass
class Event:
    """One Server-Sent Event of a job's stream: `metrics` (a row, `id` its step), `status` (the job),
    `end` (the final job)."""

    event: str
    data: Any
    id: str | None = None

    @classmethod
    def parse(cls, event: str, data: str, id: str | None) -> Event:
        try:
            payload = json.loads(data)
        except ValueError:
            payload = data
        if event in ("status", "end") and isinstance(payload, dict) and "status" in payload:
            payload = Job.of(payload)
        return cls(event or "message", payload, id or None)
