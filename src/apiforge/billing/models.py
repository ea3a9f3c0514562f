"""Wallets, the ledger, call reservations and withdrawals.

Amounts are whole RU (the smallest unit is 1 RU, as for step costs and API prices), stored as
64-bit integers: every sum is exact. The ledger is append-only and balanced: one movement is a
*transaction* (`transaction_id`) of two or more *entries*, one per wallet it touches, whose signed
amounts sum to zero. A wallet's `balance` is the sum of its entries; it is kept as a column so a
debit can be a single conditional UPDATE, and it changes only in the transaction that appends the
entries (`billing/ledger.py` is the one writer of both).

Wallet kinds: every workspace has a spendable `balance` wallet and an `earnings` wallet (what its
apps earned: price minus cost). The platform has four wallets with fixed ids: `revenue` (receives
the cost of every call), `issuance` (the source of top-ups: its balance is minus everything ever
issued, the only wallet allowed below zero), `escrow` (withdrawals awaiting an admin) and
`payouts` (RU that left the platform through approved withdrawals).

Welcome credits (`APIFORGE_WELCOME_CREDITS`) go to a console account once, not to every workspace
it creates: `welcome_grants` holds one row per account that received them.
"""

from datetime import datetime
from typing import Final

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, text
from sqlalchemy.orm import Mapped, mapped_column

from apiforge.core.db import Base, UTCDateTime, created_column, id_column, updated_column

MAX_AMOUNT: Final = 10**12  # largest single movement (RU); balances stay far inside 64 bits

WORKSPACE_KINDS: Final = ("balance", "earnings")
PLATFORM_KINDS: Final = ("revenue", "issuance", "escrow", "payouts")
# Fixed, readable ids (never valid generated ids, so no API path can name them).
PLATFORM_WALLETS: Final = {kind: f"platform.{kind}".ljust(26, ".") for kind in PLATFORM_KINDS}


class Wallet(Base):
    __tablename__ = "wallets"

    id: Mapped[str] = id_column()
    # None for the platform's wallets, and for wallets of a deleted workspace: wallets are never
    # deleted, so the ledger keeps balancing whatever happens to tenants.
    workspace_id: Mapped[str | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(String(16))
    balance: Mapped[int] = mapped_column(BigInteger, default=0)
    # RU reserved by calls in flight (PostgreSQL; SQLite reserves in process memory).
    held: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()

    __table_args__ = (
        # Nothing but the issuance wallet ever goes below zero, whatever the code above does.
        CheckConstraint("balance >= 0 OR kind = 'issuance'", name="balance_not_negative"),
        CheckConstraint("held >= 0", name="held_not_negative"),
        Index("ix_wallets_workspace_kind", "workspace_id", "kind", unique=True),
    )


class LedgerEntry(Base):
    """One wallet's side of one transaction. Never updated, never deleted."""

    __tablename__ = "ledger_entries"

    id: Mapped[str] = id_column()
    transaction_id: Mapped[str] = mapped_column(String(26))
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    # The wallet's workspace when the entry was written (no foreign key: entries outlive tenants).
    workspace_id: Mapped[str | None] = mapped_column(String(26))
    amount: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(24))
    created_at: Mapped[datetime] = created_column()
    # Calls: the app, API and request; the other workspace of the call (the app's owner on the
    # caller's entry, the caller on the builder's).
    app_id: Mapped[str | None] = mapped_column(String(26))
    api: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(128))
    counterparty_workspace_id: Mapped[str | None] = mapped_column(String(26))
    # A withdrawal the entry belongs to; the account that caused it (admin, member).
    reference_id: Mapped[str | None] = mapped_column(String(26))
    account_id: Mapped[str | None] = mapped_column(String(26))
    note: Mapped[str] = mapped_column(String(200), default="")

    __table_args__ = (
        CheckConstraint("amount <> 0", name="amount_not_zero"),
        # A workspace's history (newest first, time range, kind, app) and per-day earnings.
        # Only workspaces' entries: the platform's (one per charged call) would be one more
        # index page written by every call, for lists nobody pages through. No index per
        # wallet either (audits scan).
        Index(
            "ix_ledger_entries_workspace_created",
            "workspace_id",
            "created_at",
            sqlite_where=text("workspace_id IS NOT NULL"),
            postgresql_where=text("workspace_id IS NOT NULL"),
        ),
    )


class WelcomeGrant(Base):
    """An account received its welcome credits (into `workspace_id`'s first balance wallet).
    The primary key is the claim: of any number of racing first wallets of one account's
    workspaces, exactly one inserts the row and grants; the others insert nothing."""

    __tablename__ = "welcome_grants"

    # No foreign keys: a grant outlives the workspace (deleting and recreating one must not
    # grant again) and keeps no lock on the account or workspace row while it is written.
    account_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    workspace_id: Mapped[str | None] = mapped_column(String(26))
    created_at: Mapped[datetime] = created_column()


class WalletHold(Base):
    """A reservation of a call in flight (PostgreSQL): `wallets.held` is the sum of a wallet's
    holds. A hold is deleted when its call settles or fails; one left by a crashed process
    expires and is swept the next time its wallet lacks funds."""

    __tablename__ = "wallet_holds"

    id: Mapped[str] = id_column()
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Withdrawal(Base):
    """A builder's request to take earned RU out of the platform: `requested` moves the amount
    from the earnings wallet to escrow (so it can't be redeemed or withdrawn twice); an admin
    then `approved` it (escrow → payouts) or `rejected` it (escrow → earnings)."""

    __tablename__ = "withdrawals"

    id: Mapped[str] = id_column()
    workspace_id: Mapped[str | None] = mapped_column(
        ForeignKey("workspaces.id", ondelete="SET NULL"), index=True
    )
    amount: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="requested")
    note: Mapped[str] = mapped_column(String(500), default="")
    requested_by: Mapped[str | None] = mapped_column(String(26))
    decided_by: Mapped[str | None] = mapped_column(String(26))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decision_note: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()

    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        Index("ix_withdrawals_status_created", "status", "created_at"),
    )
