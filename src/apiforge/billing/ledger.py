"""The one writer of wallets and ledger entries: a balanced posting, or nothing.

`post` appends one transaction (entries whose amounts sum to zero) and moves every wallet's
`balance` by its entry in the same database transaction, so a balance always equals the sum of
its entries. A debit is a conditional UPDATE (`balance - held >= amount`), so no wallet but the
issuance wallet goes below zero, however many requests race: the loser's UPDATE matches no row
and the whole posting is refused (402) before anything is written. Wallet rows are updated in one
global order (workspace wallets by id, then the platform's), so two postings never deadlock.

Everything is SQLAlchemy Core on the caller's session or connection; the caller commits.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from apiforge.billing.models import (
    MAX_AMOUNT,
    PLATFORM_WALLETS,
    WORKSPACE_KINDS,
    LedgerEntry,
    Wallet,
)
from apiforge.core.errors import PaymentRequiredError
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id

Executor = AsyncSession | AsyncConnection

_DEBIT = (
    update(Wallet)
    .where(
        Wallet.id == bindparam("w"),
        (Wallet.balance - Wallet.held + bindparam("a") >= 0) | (Wallet.kind == "issuance"),
    )
    .values(balance=Wallet.balance + bindparam("a"), updated_at=bindparam("now"))
)
_CREDIT = (
    update(Wallet)
    .where(Wallet.id == bindparam("w"))
    .values(balance=Wallet.balance + bindparam("a"), updated_at=bindparam("now"))
)
_INSERT_ENTRY = insert(LedgerEntry)


class InsufficientFundsError(PaymentRequiredError):
    """A wallet can't cover a movement (402 `insufficient_balance`)."""


@dataclass(frozen=True, slots=True)
class Leg:
    """One wallet's side of a transaction: a signed amount (negative leaves the wallet)."""

    wallet_id: str
    workspace_id: str | None
    amount: int
    counterparty_workspace_id: str | None = None


def lock_order(wallet_id: str) -> tuple[int, str]:
    """Workspace wallets first (by id), then the platform's: the one order every posting and
    every charge updates wallet rows in. The platform's wallets come last so the busiest rows
    are held for the shortest time."""
    return (1 if wallet_id in _PLATFORM_IDS else 0, wallet_id)


_PLATFORM_IDS = frozenset(PLATFORM_WALLETS.values())


def check_amount(amount: int) -> None:
    """Programming guard (inputs are validated in the schemas): a whole RU in range."""
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 < amount <= MAX_AMOUNT:
        raise ValueError(f"amount out of range: {amount!r}")


async def post(
    executor: Executor,
    legs: Sequence[Leg],
    *,
    kind: str,
    now: datetime | None = None,
    transaction_id: str | None = None,
    **meta: Any,
) -> str:
    """Append one balanced transaction and move the wallets; returns its id. Raises
    `InsufficientFundsError` (nothing written) when a debited wallet can't cover its leg.
    `meta` fills the entries' optional columns (app_id, api, request_id, reference_id,
    account_id, note)."""
    if len(legs) < 2 or sum(leg.amount for leg in legs) != 0:
        raise ValueError("a transaction needs two or more legs summing to zero")
    if any(leg.amount == 0 for leg in legs):
        raise ValueError("a leg moves a non-zero amount")
    now = now or utcnow()
    transaction_id = transaction_id or new_id()
    for leg in sorted(legs, key=lambda leg: lock_order(leg.wallet_id)):
        params = {"w": leg.wallet_id, "a": leg.amount, "now": now}
        if leg.amount < 0:
            result = await executor.execute(_DEBIT, params)
            if result.rowcount != 1:  # type: ignore[attr-defined]
                raise InsufficientFundsError(details={"walletId": leg.wallet_id})
        else:
            await executor.execute(_CREDIT, params)
    rows = [
        {
            "id": new_id(),
            "transaction_id": transaction_id,
            "wallet_id": leg.wallet_id,
            "workspace_id": leg.workspace_id,
            "amount": leg.amount,
            "kind": kind,
            "created_at": now,
            "counterparty_workspace_id": leg.counterparty_workspace_id,
            "note": "",
            **meta,
        }
        for leg in legs
    ]
    await executor.execute(_INSERT_ENTRY, rows)
    return transaction_id


def dialect_name(executor: Executor) -> str:
    if isinstance(executor, AsyncConnection):
        return executor.dialect.name
    bind = executor.bind
    return "sqlite" if bind is None else bind.dialect.name


async def workspace_wallets(executor: Executor, workspace_id: str) -> dict[str, str]:
    """kind -> wallet id of the workspace's wallets that exist."""
    rows = await executor.execute(
        select(Wallet.kind, Wallet.id).where(Wallet.workspace_id == workspace_id)
    )
    return {str(kind): str(wallet_id) for kind, wallet_id in rows}


async def ensure_wallets(
    executor: Executor, workspace_id: str, *, welcome_credits: int = 0
) -> tuple[dict[str, str], bool]:
    """The workspace's wallets (kind -> id), creating any that are missing; the second value
    says whether this call created the balance wallet (and so granted `welcome_credits` from
    the issuance wallet, once per workspace, however many requests race). The caller commits."""
    found = await workspace_wallets(executor, workspace_id)
    if len(found) == len(WORKSPACE_KINDS):
        return found, False
    now = utcnow()
    values = [
        {
            "id": new_id(),
            "workspace_id": workspace_id,
            "kind": kind,
            "balance": 0,
            "held": 0,
            "created_at": now,
            "updated_at": now,
        }
        for kind in WORKSPACE_KINDS
        if kind not in found
    ]
    created = False
    for value in values:
        if dialect_name(executor) == "postgresql":
            stmt: Any = postgresql.insert(Wallet).values(value).on_conflict_do_nothing()
        else:
            stmt = sqlite.insert(Wallet).values(value).on_conflict_do_nothing()
        result = await executor.execute(stmt)
        if value["kind"] == "balance" and result.rowcount == 1:  # type: ignore[attr-defined]
            created = True
    wallets = await workspace_wallets(executor, workspace_id)
    if created and welcome_credits > 0:
        await post(
            executor,
            [
                Leg(PLATFORM_WALLETS["issuance"], None, -welcome_credits),
                Leg(wallets["balance"], workspace_id, welcome_credits),
            ],
            kind="welcome",
            now=now,
            note="welcome credits",
        )
    return wallets, created
