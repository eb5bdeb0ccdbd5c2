"""Parent and child jobs (a sweep and its members): jobs.parent_id, indexed."""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("parent_id", sa.String(64), nullable=True))
    op.create_index("ix_jobs_parent_id", "jobs", ["parent_id"])
