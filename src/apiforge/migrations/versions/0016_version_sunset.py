"""versions: sunset dates (RFC 8594) and an optimistic lock on published versions

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-09
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Both columns work while the previous release still serves: it never reads them, and the
    # rows it inserts get no sunset and the first revision from the server default.
    with op.batch_alter_table("app_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sunset_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("revision", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("app_versions", schema=None) as batch_op:
        batch_op.drop_column("revision")
        batch_op.drop_column("sunset_at")
