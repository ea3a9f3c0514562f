"""versions: the moment a version was deprecated (`Deprecation: @<seconds>`, RFC 9745)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_versions = sa.table(
    "app_versions",
    sa.column("deprecated", sa.Boolean()),
    sa.column("created_at", sa.DateTime(timezone=True)),
    sa.column("deprecated_at", sa.DateTime(timezone=True)),
)


def upgrade() -> None:
    # Works while the previous release still serves: it never reads the column, and a version
    # it deprecates meanwhile has none, which the gateway reads as its publish time (as here).
    with op.batch_alter_table("app_versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deprecated_at", sa.DateTime(timezone=True), nullable=True))
    # The moment of an earlier deprecation was never recorded: the version's publish time is the
    # one moment known to be no later (a date in the past, as RFC 9745 expects).
    op.execute(
        _versions.update()
        .where(_versions.c.deprecated == sa.true())
        .values(deprecated_at=_versions.c.created_at)
    )


def downgrade() -> None:
    with op.batch_alter_table("app_versions", schema=None) as batch_op:
        batch_op.drop_column("deprecated_at")
