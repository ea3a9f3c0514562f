"""end users' token revocations per app, partition and user (jwtRevoke), and its step price

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-08
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The default RU cost of the new step type, as `userRight` (a write of one row of the app's).
JWT_REVOKE_COST = 1


def upgrade() -> None:
    # A new table and a new price row: the previous release neither reads nor writes them (it
    # does not know the step type, so no API of it can be saved there).
    op.create_table(
        "end_user_token_revocations",
        sa.Column("app_id", sa.String(length=26), nullable=False),
        sa.Column("workspace_id", sa.String(length=26), nullable=False),
        sa.Column("sub", sa.String(length=128), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["app_id"],
            ["apps.id"],
            name=op.f("fk_end_user_token_revocations_app_id_apps"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_end_user_token_revocations_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "app_id", "workspace_id", "sub", name=op.f("pk_end_user_token_revocations")
        ),
    )
    with op.batch_alter_table("end_user_token_revocations", schema=None) as batch_op:
        batch_op.create_index(
            "ix_end_user_token_revocations_app_revoked", ["app_id", "revoked_at"], unique=False
        )
    prices = sa.table(
        "step_prices",
        sa.column("step_type", sa.String),
        sa.column("cost", sa.BigInteger),
        sa.column("updated_at", sa.DateTime(timezone=True)),
    )
    now = datetime.now(UTC)
    if op.get_bind().dialect.name == "sqlite":
        now = now.replace(tzinfo=None)
    op.bulk_insert(prices, [{"step_type": "jwtRevoke", "cost": JWT_REVOKE_COST, "updated_at": now}])


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM step_prices WHERE step_type = 'jwtRevoke'"))
    with op.batch_alter_table("end_user_token_revocations", schema=None) as batch_op:
        batch_op.drop_index("ix_end_user_token_revocations_app_revoked")
    op.drop_table("end_user_token_revocations")
