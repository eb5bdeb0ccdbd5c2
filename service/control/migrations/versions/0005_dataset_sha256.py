"""datasets.sha256: the sha256 of a dataset's packed form in an object store (DCL_STORAGE_URL=s3://),
the key of the workers' dataset caches; NULL for datasets kept in a shared folder."""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("datasets") as batch:
        batch.drop_column("sha256")
