"""What the API answers: the public shape of jobs, datasets, artifacts and metrics.

Requests are validated with `dcl_core.config` (JobSpec and its parts) directly: one schema
for the API and the engine.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.store import utcnow

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobType = Literal["pretrain", "linear_probe", "embed"]


class Progress(BaseModel):
    step: int = Field(description="Steps done (counts from 1).")
    total_steps: int | None = None
    epoch: float | None = None
    fraction: float | None = Field(default=None, description="step / total_steps, 0..1.")
    elapsed_s: float | None = Field(default=None, description="Seconds since the job started.")
    eta_s: float | None = Field(default=None, description="Estimated seconds left, from elapsed time and progress.")


class JobPublic(BaseModel):
    id: str
    type: JobType
    status: JobStatus
    spec: dict[str, Any] = Field(description="The validated job request, every default filled in.")
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    worker: str | None = None
    attempts: int = Field(description="How many times a worker claimed the job (>1: it was resumed).")
    cancel_requested: bool = False
    progress: Progress
    latest_metrics: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    @classmethod
    def from_row(cls, row: dict) -> "JobPublic":
        now = utcnow()
        started, finished = row.get("started_at"), row.get("finished_at")
        step, total = int(row.get("step") or 0), row.get("total_steps")
        elapsed = ((finished or now) - started).total_seconds() if started else None
        fraction = min(1.0, step / total) if total else None
        eta = None
        if row["status"] == "running" and elapsed is not None and fraction:
            eta = max(0.0, elapsed * (1 - fraction) / fraction)
        elif row["status"] == "succeeded":
            eta = 0.0
        return cls(
            **{k: row.get(k) for k in (
                "id", "type", "status", "spec", "created_at", "started_at", "finished_at", "worker",
                "latest_metrics", "result", "error",
            )},
            attempts=row.get("attempts") or 0,
            cancel_requested=bool(row.get("cancel_requested")),
            progress=Progress(
                step=step, total_steps=total, epoch=row.get("epoch"), fraction=fraction,
                elapsed_s=elapsed, eta_s=eta,
            ),
        )


class JobsPublic(BaseModel):
    items: list[JobPublic]
    total: int
    limit: int
    offset: int


class MetricsPublic(BaseModel):
    job_id: str
    items: list[dict[str, Any]] = Field(description="Rows by step: {step, attempt, loss, lr, epoch, ...}.")
    next_since: int = Field(description="Pass as `since` to get only newer rows.")
    thinned: bool = Field(default=False, description="True when `max_points` left rows out.")


class DatasetPublic(BaseModel):
    id: str
    name: str
    bytes: int
    created_at: datetime
    summary: dict[str, Any] = Field(description="num_images, classes, class_counts, sizes, corrupt, ignored, format.")
    source: str = Field(description="What a job config names to use it: dataset:ID.")

    @classmethod
    def from_row(cls, row: dict) -> "DatasetPublic":
        return cls(**{k: row[k] for k in ("id", "name", "bytes", "created_at", "summary")},
                   source=f"dataset:{row['id']}")


class DatasetsPublic(BaseModel):
    items: list[DatasetPublic]
    total: int
    limit: int
    offset: int


class ArtifactPublic(BaseModel):
    name: str
    size: int
    sha256: str
    created_at: datetime | None = None
    url: str


class ArtifactsPublic(BaseModel):
    job_id: str
    items: list[ArtifactPublic]


class Message(BaseModel):
    detail: str


class FieldProblem(BaseModel):
    loc: list[str | int] = Field(description="Where: ['body', 'config', 'batch_size'], ['query', 'limit'], ...")
    field: str = Field(description="The same, as a dotted path without the leading 'body'.")
    msg: str
    type: str


class ValidationErrorPublic(BaseModel):
    """A 422: `detail` is one line a person reads; `errors` has each problem."""

    detail: str
    errors: list[FieldProblem]
