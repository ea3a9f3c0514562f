"""apps: the signing secret before the last rotation, accepted until a grace ends

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable, no default, no backfill: works while the previous release still serves (it
    # never reads these columns, and no app has rotated yet: no previous secret to accept).
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("previous_signing_secret", sa.String(length=128), nullable=True)
        )
        batch_op.add_column(
            sa.Column("previous_signing_secret_until", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    # A grace running at the downgrade ends with it: the older release knows one secret only.
    with op.batch_alter_table("apps", schema=None) as batch_op:
        batch_op.drop_column("previous_signing_secret_until")
        batch_op.drop_column("previous_signing_secret")
