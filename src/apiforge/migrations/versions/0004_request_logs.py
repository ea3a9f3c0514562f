"""request logs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    # No foreign keys: rows are written in batches after the call, and must not fail when the
    # workspace, app or key they name has been deleted meanwhile.
    op.create_table(
        "request_logs",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(length=128), nullable=False),
        sa.Column("workspace_id", sa.String(length=26), nullable=True),
        sa.Column("app_workspace_id", sa.String(length=26), nullable=True),
        sa.Column("account_id", sa.String(length=26), nullable=True),
        sa.Column("key_id", sa.String(length=26), nullable=True),
        sa.Column("caller_kind", sa.String(length=16), nullable=True),
        sa.Column("app_id", sa.String(length=26), nullable=False),
        sa.Column("api", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("client_ip", sa.String(length=45), nullable=False),
        sa.Column("args", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_logs")),
    )
    with op.batch_alter_table("request_logs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_request_logs_workspace_created",
            ["workspace_id", "created_at", "status"],
            unique=False,
        )
        batch_op.create_index(
            "ix_request_logs_app_workspace_created",
            ["app_workspace_id", "created_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("request_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_request_logs_app_workspace_created")
        batch_op.drop_index("ix_request_logs_workspace_created")
    op.drop_table("request_logs")
