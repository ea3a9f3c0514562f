"""traffic limits: an optimistic lock (`version`)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Works while the previous release still serves: it never reads the column, and the rows it
    # inserts get the first version from the server default (its updates don't bump it, which
    # only makes a later If-Match of that version succeed once more).
    with op.batch_alter_table("traffic_limits", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("traffic_limits", schema=None) as batch_op:
        batch_op.drop_column("version")
