"""billing: wallets, ledger entries, call holds, withdrawals; the platform's wallets

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Copied, not imported: a migration must not change when the models do.
PLATFORM_KINDS = ("revenue", "issuance", "escrow", "payouts")


def upgrade() -> None:
    wallets = op.create_table(
        "wallets",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("workspace_id", sa.String(length=26), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "balance >= 0 OR kind = 'issuance'",
            name=op.f("ck_wallets_balance_not_negative"),
        ),
        sa.CheckConstraint("held >= 0", name=op.f("ck_wallets_held_not_negative")),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_wallets_workspace_id_workspaces"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallets")),
    )
    with op.batch_alter_table("wallets", schema=None) as batch_op:
        batch_op.create_index("ix_wallets_workspace_kind", ["workspace_id", "kind"], unique=True)

    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("transaction_id", sa.String(length=26), nullable=False),
        sa.Column("wallet_id", sa.String(length=26), nullable=False),
        sa.Column("workspace_id", sa.String(length=26), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=24), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("app_id", sa.String(length=26), nullable=True),
        sa.Column("api", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("counterparty_workspace_id", sa.String(length=26), nullable=True),
        sa.Column("reference_id", sa.String(length=26), nullable=True),
        sa.Column("account_id", sa.String(length=26), nullable=True),
        sa.Column("note", sa.String(length=200), nullable=False),
        sa.CheckConstraint("amount <> 0", name=op.f("ck_ledger_entries_amount_not_zero")),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_ledger_entries_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_ledger_entries_workspace_created",
            ["workspace_id", "created_at"],
            unique=False,
            sqlite_where=sa.text("workspace_id IS NOT NULL"),
            postgresql_where=sa.text("workspace_id IS NOT NULL"),
        )

    op.create_table(
        "wallet_holds",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("wallet_id", sa.String(length=26), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["wallet_id"], ["wallets.id"], name=op.f("fk_wallet_holds_wallet_id_wallets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wallet_holds")),
    )
    with op.batch_alter_table("wallet_holds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_wallet_holds_wallet_id"), ["wallet_id"], unique=False)

    op.create_table(
        "withdrawals",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("workspace_id", sa.String(length=26), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("requested_by", sa.String(length=26), nullable=True),
        sa.Column("decided_by", sa.String(length=26), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("decision_note", sa.String(length=500), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_withdrawals_amount_positive")),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_withdrawals_workspace_id_workspaces"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_withdrawals")),
    )
    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.create_index(
            "ix_withdrawals_status_created", ["status", "created_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_withdrawals_workspace_id"), ["workspace_id"], unique=False
        )

    now = datetime.now(UTC)
    op.bulk_insert(
        wallets,
        [
            {
                "id": f"platform.{kind}".ljust(26, "."),
                "workspace_id": None,
                "kind": kind,
                "balance": 0,
                "held": 0,
                "created_at": now,
                "updated_at": now,
            }
            for kind in PLATFORM_KINDS
        ],
    )


def downgrade() -> None:
    with op.batch_alter_table("withdrawals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_withdrawals_workspace_id"))
        batch_op.drop_index("ix_withdrawals_status_created")
    op.drop_table("withdrawals")
    with op.batch_alter_table("wallet_holds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_wallet_holds_wallet_id"))
    op.drop_table("wallet_holds")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_entries_workspace_created")
    op.drop_table("ledger_entries")
    with op.batch_alter_table("wallets", schema=None) as batch_op:
        batch_op.drop_index("ix_wallets_workspace_kind")
    op.drop_table("wallets")
