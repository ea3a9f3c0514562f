"""billing: welcome credits once per console account (welcome_grants)

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Accounts that already received welcome credits count as having received them: the owner of
# each workspace with a `welcome` entry (its current owner, the only one recorded; a deleted
# workspace's owner is not known any more).
BACKFILL = """
INSERT INTO welcome_grants (account_id, workspace_id, created_at)
SELECT w.owner_id, MIN(e.workspace_id), MIN(e.created_at)
FROM ledger_entries e JOIN workspaces w ON w.id = e.workspace_id
WHERE e.kind = 'welcome' AND e.amount > 0
GROUP BY w.owner_id
"""


def upgrade() -> None:
    op.create_table(
        "welcome_grants",
        sa.Column("account_id", sa.String(length=26), nullable=False),
        sa.Column("workspace_id", sa.String(length=26), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_welcome_grants")),
    )
    op.execute(BACKFILL)


def downgrade() -> None:
    op.drop_table("welcome_grants")
