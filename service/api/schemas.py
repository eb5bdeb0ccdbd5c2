"""What the API answers: the public shape of jobs, datasets, artifacts and metrics.

Requests are validated with `dcl_core.jobs.JobSpec` (each job type's spec model) directly: one schema
for the API and the engine.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dcl_core.jobs import JobTypeName
from dcl_core.jobs.base import MAX_TAGS, JobName, Notes, Tag
from service.control.clock import utcnow
from service.control.models import ChildSummary, Dataset, Job

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
JobType = JobTypeName


class Progress(BaseModel):
    step: int = Field(description="Steps done (counts from 1).")
    total_steps: int | None = None
    epoch: float | None = None
    fraction: float | None = Field(default=None, description="step / total_steps, 0..1.")
    elapsed_s: float | None = Field(default=None, description="Seconds since the job started.")
    eta_s: float | None = Field(default=None, description="Estimated seconds left, from elapsed time and progress.")


class ChildCounts(BaseModel):
    """A parent job's children by status."""

    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


class EvaluationPublic(BaseModel):
    """A probe or embed job that names this encoder, with its score."""

    id: str
    type: JobType
    status: JobStatus
    name: str | None = None
    classifier: str | None = Field(default=None, description="A probe's: logistic (linear) or knn.")
    score: float | None = Field(default=None, description="A probe's accuracy on its test split (0..1).")
    created_at: datetime
    finished_at: datetime | None = None

    @classmethod
    def from_job(cls, job: Job) -> "EvaluationPublic":
        return cls(id=job.id, type=job.type, status=job.status, name=job.name, score=job.score,
                   classifier=job.spec_data.get("classifier") if job.type == "linear_probe" else None,
                   created_at=job.created_at, finished_at=job.finished_at)


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
    parent: str | None = Field(default=None, description="The parent job (a sweep) of this one, if any.")
    children: ChildCounts | None = Field(
        default=None, description="A parent's children by status (list them: GET /v1/jobs?parent=ID); "
        "its progress sums theirs.")
    name: str | None = None
    tags: list[str] = Field(default_factory=list, description="Sorted.")
    notes: str | None = None
    score: float | None = Field(default=None, description=(
        "The primary score (0..1): an encoder's linear top-1 from its own `evaluate`, else from its latest "
        "linear probe; a probe's accuracy. Sort with GET /v1/jobs?sort=-score."))
    evaluations: list[EvaluationPublic] | None = Field(default=None, description=(
        "A pretrain job read on its own (GET /v1/jobs/ID): the probe and embed jobs that name it as "
        "their encoder_job, newest first (at most 100)."))

    @classmethod
    def from_job(cls, job: Job, children: ChildSummary | None = None,
                 evaluations: list[Job] | None = None) -> "JobPublic":
        """`children`: a parent's summary of its children (its progress is theirs); `evaluations`: an
        encoder's probe and embed jobs."""
        now = utcnow()
        step, total = job.step or 0, job.total_steps
        if children is not None:
            step, total = children.step, children.total_steps
        elapsed = ((job.finished_at or now) - job.started_at).total_seconds() if job.started_at else None
        fraction = min(1.0, step / total) if total else None
        if children is not None:
            fraction = children.fraction
        eta = None
        if job.status == "running" and elapsed is not None and fraction:
            eta = max(0.0, elapsed * (1 - fraction) / fraction)
        elif job.status == "succeeded":
            eta = 0.0
        return cls(
            id=job.id, type=job.type, status=job.status, spec=job.spec_data, created_at=job.created_at,
            started_at=job.started_at, finished_at=job.finished_at, worker=job.worker,
            latest_metrics=job.latest_metrics, result=job.result, error=job.error, attempts=job.attempts or 0,
            parent=job.parent_id, cancel_requested=bool(job.cancel_requested),
            children=ChildCounts(**children.counts) if children is not None else None,
            name=job.name, tags=job.tags, notes=job.notes, score=job.score,
            evaluations=[EvaluationPublic.from_job(e) for e in evaluations] if evaluations is not None else None,
            progress=Progress(step=step, total_steps=total, epoch=job.epoch, fraction=fraction,
                              elapsed_s=elapsed, eta_s=eta),
        )


class JobPatch(BaseModel):
    """What PATCH /v1/jobs/ID changes: only the fields sent (`null` clears a name or notes)."""

    model_config = ConfigDict(extra="forbid")

    name: JobName | None = None
    notes: Notes | None = None
    tags: list[Tag] | None = Field(default=None, max_length=MAX_TAGS, description="Replaces the job's tags "
                                   "(`[]` or `null`: none).")
    add_tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS, description="Added (after `tags`).")
    remove_tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS, description="Removed (last).")

    def changes(self) -> dict[str, Any]:
        changes = {k: getattr(self, k) for k in ("name", "notes", "tags") if k in self.model_fields_set}
        if "tags" in changes and changes["tags"] is None:
            changes["tags"] = []
        return changes


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
    def from_dataset(cls, dataset: Dataset) -> "DatasetPublic":
        return cls(id=dataset.id, name=dataset.name, bytes=dataset.bytes, created_at=dataset.created_at,
                   summary=dataset.summary, source=f"dataset:{dataset.id}")


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
