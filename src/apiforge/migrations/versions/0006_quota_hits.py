"""quota_hits

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # No foreign keys: rows are written in batches after the refusal, and must not fail when the
    # workspace or plan they name has been deleted meanwhile.
    op.create_table(
        "quota_hits",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workspace_id", sa.String(length=26), nullable=False),
        sa.Column("plan_id", sa.String(length=26), nullable=False),
        sa.Column("quota", sa.String(length=32), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("quota_limit", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quota_hits")),
    )
    with op.batch_alter_table("quota_hits", schema=None) as batch_op:
        batch_op.create_index("ix_quota_hits_created", ["created_at"], unique=False)
        batch_op.create_index(
            "ix_quota_hits_workspace_created", ["workspace_id", "created_at"], unique=False
        )
    # The records and stored bytes of a workspace across all its collections, for the plan's
    # `records` and `storageBytes` quotas, counted from the index alone.
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.create_index("ix_records_partition_size", ["partition", "size"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_index("ix_records_partition_size")
    with op.batch_alter_table("quota_hits", schema=None) as batch_op:
        batch_op.drop_index("ix_quota_hits_workspace_created")
        batch_op.drop_index("ix_quota_hits_created")
    op.drop_table("quota_hits")
