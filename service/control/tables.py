"""The job store's tables (SQLAlchemy Core), the one place their columns are written down.

Alembic revisions in `migrations/versions` bring a database to this shape; a test checks that
they agree. Only `transitions.py` writes a job's `status`.
"""

from __future__ import annotations

from datetime import timezone

from sqlalchemy import (
    JSON, BigInteger, Boolean, Column, DateTime, Float, Index, Integer, MetaData, String, Table, Text, UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Stored as naive UTC (the same on SQLite and PostgreSQL), returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(timezone.utc).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        return value.replace(tzinfo=timezone.utc) if value is not None else None


metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False, index=True),
    Column("type", String(32), nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("spec", JSON, nullable=False),
    Column("queue", String(64), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("enqueued_at", UTCDateTime, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("worker", String(255), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_expires_at", UTCDateTime, nullable=True),
    Column("heartbeat_at", UTCDateTime, nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("step", Integer, nullable=False, default=0),
    Column("total_steps", Integer, nullable=True),
    Column("epoch", Float, nullable=True),
    Column("latest_metrics", JSON, nullable=True),
    Column("result", JSON, nullable=True),
    Column("error", Text, nullable=True),
    # A child's parent (a sweep's members); added by migration 0002.
    Column("parent_id", String(64), nullable=True, index=True),
    # Added by migration 0003: what a person calls it, its notes, its primary score (an encoder's
    # linear top-1, a probe's accuracy; set by `lifecycle`), the encoder job a probe or embed names.
    Column("name", String(100), nullable=True, index=True),
    Column("notes", Text, nullable=True),
    Column("score", Float, nullable=True, index=True),
    Column("encoder_job", String(64), nullable=True, index=True),
)

job_tags = Table(
    "job_tags",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("tag", String(64), primary_key=True, index=True),
)

metrics = Table(
    "metrics",
    metadata,
    Column("job_id", String(64), nullable=False, index=True),
    Column("step", Integer, nullable=False),
    Column("attempt", Integer, nullable=False, default=1),
    Column("values", JSON, nullable=False),
    UniqueConstraint("job_id", "step", name="uq_metrics_job_step"),
)

datasets = Table(
    "datasets",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("summary", JSON, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sha256", String(64), nullable=True),  # of its packed form in an object store; None in a folder
)

artifacts = Table(
    "artifacts",
    metadata,
    Column("job_id", String(64), nullable=False, index=True),
    Column("name", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"),
)

workers = Table(
    "workers",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("info", JSON, nullable=True),
    Column("seen_at", UTCDateTime, nullable=False),
)

# ---- the model registry and webhooks (migration 0004) ------------------------------------

registered_models = Table(
    "registered_models",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False),
    Column("name", String(100), nullable=False),
    Column("last_version", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("owner", "name", name="uq_registered_models_owner_name"),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("model_id", String(64), primary_key=True),
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("job_id", String(64), nullable=False, index=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("model_id", "job_id", name="uq_model_versions_model_job"),  # a job is one version of a model
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("model_id", String(64), primary_key=True),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("owner", String(64), nullable=False, index=True),
    Column("url", Text, nullable=False),
    Column("events", JSON, nullable=False),
    Column("secret", String(128), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# The outbox: one row an event and hook, written in the transaction that ended the job; the
# worker's dispatcher sends it (and again, with back-off) until it is delivered or given up.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("webhook_id", String(64), nullable=False, index=True),
    Column("event_id", String(64), nullable=False),
    Column("type", String(32), nullable=False),
    Column("job_id", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("delivery_id", String(64), primary_key=True),
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("duration_ms", Integer, nullable=False),
)
