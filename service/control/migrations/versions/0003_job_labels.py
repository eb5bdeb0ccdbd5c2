"""Names, tags, notes and scores: jobs.name, jobs.notes, jobs.score (the primary score),
jobs.encoder_job (the encoder a probe or embed job names), and the job_tags table. Existing
jobs get their encoder_job and score from their stored spec and result."""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

def upgrade() -> None:
    op.add_column("jobs", sa.Column("name", sa.String(100), nullable=True))
    op.add_column("jobs", sa.Column("notes", sa.Text, nullable=True))
    op.add_column("jobs", sa.Column("score", sa.Float, nullable=True))
    op.add_column("jobs", sa.Column("encoder_job", sa.String(64), nullable=True))
    op.create_index("ix_jobs_name", "jobs", ["name"])
    op.create_index("ix_jobs_score", "jobs", ["score"])
    op.create_index("ix_jobs_encoder_job", "jobs", ["encoder_job"])
    op.create_table(
        "job_tags",
        sa.Column("job_id", sa.String(64), primary_key=True),
        sa.Column("tag", sa.String(64), primary_key=True),
    )
    op.create_index("ix_job_tags_tag", "job_tags", ["tag"])
    backfill(op.get_bind())


def backfill(conn) -> None:
    """The same rules as `lifecycle` (service/control/scores.py), written out here so that this
    revision keeps meaning what it meant when the code moves on."""
    jobs = sa.table("jobs", sa.column("id"), sa.column("type"), sa.column("status"), sa.column("spec", sa.JSON),
                    sa.column("result", sa.JSON), sa.column("finished_at"), sa.column("score"),
                    sa.column("encoder_job"))
    rows = conn.execute(
        sa.select(jobs.c.id, jobs.c.type, jobs.c.status, jobs.c.spec, jobs.c.result, jobs.c.finished_at)
        .where(jobs.c.type.in_(("pretrain", "linear_probe", "embed"))).execution_options(yield_per=1000))
    updates: dict[str, dict] = {}
    linear: dict[str, tuple] = {}  # encoder -> (finished_at, accuracy) of its latest logistic probe
    for row in rows:
        spec, result = row.spec or {}, row.result or {}
        values: dict = {}
        if row.type in ("linear_probe", "embed") and isinstance(spec.get("encoder_job"), str):
            values["encoder_job"] = spec["encoder_job"]
        score = None
        if row.status == "succeeded" and row.type == "pretrain":
            score = (result.get("scores") or {}).get("linear_top1")
        elif row.status == "succeeded" and row.type == "linear_probe":
            score = result.get("accuracy")
            if isinstance(score, (int, float)) and spec.get("classifier", "logistic") == "logistic" \
                    and "encoder_job" in values:
                latest = (str(row.finished_at or ""), row.id)
                seen = linear.get(values["encoder_job"])
                if seen is None or latest > seen[0]:
                    linear[values["encoder_job"]] = (latest, float(score))
        if isinstance(score, (int, float)):
            values["score"] = float(score)
        if values:
            updates[row.id] = values
    for encoder, (_, score) in linear.items():
        if encoder in updates and "score" in updates[encoder]:
            continue  # its own evaluate score comes first
        updates.setdefault(encoder, {})["score"] = score
    for job_id, values in updates.items():
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(**values))
