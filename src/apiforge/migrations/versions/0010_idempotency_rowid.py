"""idempotency records keep a rowid

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
COPY = (
    "INSERT INTO _idempotency_records_new "
    "(id, fingerprint, owner, status, headers, body, created_at, expires_at) "
    "SELECT id, fingerprint, owner, status, headers, body, created_at, expires_at "
    "FROM idempotency_records"
)


def _rebuild(with_rowid: bool) -> None:
    """SQLite only (PostgreSQL has no WITHOUT ROWID): the same table, rows and index, stored
    with or without a rowid; answers stored meanwhile are kept."""
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_table(
        "_idempotency_records_new",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=26), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("headers", JSON, nullable=True),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_idempotency_records"),
        sqlite_with_rowid=with_rowid,
    )
    op.execute(COPY)
    op.drop_index("ix_idempotency_records_created_at", table_name="idempotency_records")
    op.drop_table("idempotency_records")
    op.rename_table("_idempotency_records_new", "idempotency_records")
    op.create_index("ix_idempotency_records_created_at", "idempotency_records", ["created_at"])


def upgrade() -> None:
    _rebuild(with_rowid=True)


def downgrade() -> None:
    _rebuild(with_rowid=False)
