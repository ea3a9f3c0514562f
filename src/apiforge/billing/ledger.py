"""The one writer of wallets and ledger entries: a balanced posting, or nothing.

`post` appends one transaction (entries whose amounts sum to zero) and moves every wallet's
`balance` by its entry in the same database transaction, so a balance always equals the sum of
its entries. A debit is a conditional UPDATE (`balance - held >= amount`), so no wallet but the
issuance wallet goes below zero, however many requests race: the loser's UPDATE matches no row
and the whole posting is refused (402) before anything is written. A wallet moves only while it
belongs to its leg's workspace: one detached by a deletion meanwhile refuses the posting (404).

Lock order (PostgreSQL): within one database transaction, the rows of the workspaces whose
deletion it must not cross are held first (`hold_workspace`, by id: a deletion locks that row
before its cascade detaches the workspace's wallets and withdrawals, in its own order), then new
wallet rows and welcome claims are inserted (`create_wallets`), then wallet rows are updated in
one global order — workspace wallets by id, then the platform's — across *all* the
transaction's postings, so no two transactions ever wait for each other's rows in opposite
orders. A gateway charge (`charging.DatabaseCharger.settle`) takes its wallet rows in that order
too (its entries' foreign keys, then its updates), and a deletion locks its workspaces' wallets
in it before its cascade detaches them (`lock_wallets`). A posting updates its rows in
that order (`lock_order`); a transaction with two postings makes the second lock only rows that
sort after the first's (or rows it holds already): a welcome grant (a new workspace wallet, then
the issuance wallet) is therefore posted after the request's own posting, never before it.

Everything is SQLAlchemy Core on the caller's session or connection; the caller commits.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from apiforge.billing.models import (
    MAX_AMOUNT,
    PLATFORM_WALLETS,
    WORKSPACE_KINDS,
    LedgerEntry,
    Wallet,
    WelcomeGrant,
)
from apiforge.core.db import begin_as_writer
from apiforge.core.errors import NotFoundError, PaymentRequiredError
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id
from apiforge.workspaces.models import Workspace

Executor = AsyncSession | AsyncConnection

# Both move a wallet only while it still belongs to the leg's workspace (None: the platform's):
# a workspace deleted since the request read its wallets has them detached (`workspace_id` set
# to NULL), and PostgreSQL re-checks the condition on the row the deletion wrote.
_OWNED = Wallet.workspace_id.is_not_distinct_from(bindparam("ws"))
_DEBIT = (
    update(Wallet)
    .where(
        Wallet.id == bindparam("w"),
        _OWNED,
        (Wallet.balance - Wallet.held + bindparam("a") >= 0) | (Wallet.kind == "issuance"),
    )
    .values(balance=Wallet.balance + bindparam("a"), updated_at=bindparam("now"))
)
_CREDIT = (
    update(Wallet)
    .where(Wallet.id == bindparam("w"), _OWNED)
    .values(balance=Wallet.balance + bindparam("a"), updated_at=bindparam("now"))
)
_INSERT_ENTRY = insert(LedgerEntry)


class InsufficientFundsError(PaymentRequiredError):
    """A wallet can't cover a movement (402 `insufficient_balance`): `data.walletId` (the
    wallet short), `data.required` (the RU the movement takes from it)."""

    message = "The wallet does not cover this amount"


@dataclass(frozen=True, slots=True)
class Leg:
    """One wallet's side of a transaction: a signed amount (negative leaves the wallet).
    `workspace_id` is the wallet's owner (None: the platform's), which `post` checks."""

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


def check_legs(legs: Sequence[Leg]) -> None:
    """Programming guard of every posting (inputs are validated in the schemas, the gateway's
    charges by `charging.split`): two or more legs of whole non-zero RU summing to zero, and
    moving at most `MAX_AMOUNT` in all (the sum of the credits), so no caller, present or future,
    can move more in one movement than the schemas let anyone ask for."""
    if len(legs) < 2 or sum(leg.amount for leg in legs) != 0:
        raise ValueError("a transaction needs two or more legs summing to zero")
    if any(type(leg.amount) is not int or leg.amount == 0 for leg in legs):
        raise ValueError("a leg moves a non-zero whole amount")
    moved = sum(leg.amount for leg in legs if leg.amount > 0)
    if moved > MAX_AMOUNT:
        raise ValueError(f"a movement of {moved} RU is above MAX_AMOUNT ({MAX_AMOUNT})")


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
    `InsufficientFundsError` (nothing written) when a debited wallet can't cover its leg,
    `NotFoundError` (`workspace_not_found`) when a leg's wallet no longer belongs to the leg's
    workspace (deleted meanwhile), and `ValueError` (nothing written) for legs `check_legs`
    refuses. `meta` fills the entries' optional columns (app_id, api, request_id, reference_id,
    account_id, note)."""
    check_legs(legs)
    now = now or utcnow()
    transaction_id = transaction_id or new_id()
    for leg in sorted(legs, key=lambda leg: lock_order(leg.wallet_id)):
        params = {"w": leg.wallet_id, "ws": leg.workspace_id, "a": leg.amount, "now": now}
        result = await executor.execute(_DEBIT if leg.amount < 0 else _CREDIT, params)
        if result.rowcount != 1:  # type: ignore[attr-defined]
            await _refuse(executor, leg)
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


async def _refuse(executor: Executor, leg: Leg) -> None:
    """Why a leg moved nothing: its workspace was deleted since the request read its wallets
    (404 `workspace_not_found`: RU never land in or leave a wallet nobody owns), else a debit
    its wallet can't cover (402)."""
    owner = await executor.scalar(select(Wallet.workspace_id).where(Wallet.id == leg.wallet_id))
    if owner != leg.workspace_id:
        raise NotFoundError("Workspace not found", reason="workspace_not_found")
    raise InsufficientFundsError(details={"walletId": leg.wallet_id, "required": -leg.amount})


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


async def hold_workspace(executor: Executor, workspace_id: str) -> str | None:
    """Hold the workspace's row until commit (PostgreSQL's FOR KEY SHARE, the lock its foreign
    keys take): the workspace's deletion, which takes that row before its cascade detaches the
    wallets and withdrawals, waits for this transaction instead of locking them first. Taken
    before any row of the workspace (module docstring). On SQLite the transaction becomes the
    writer here (`begin_as_writer`): its driver reads outside a transaction until the first
    write, so a deletion committing between this read and the wallets' would show the workspace
    present and its wallets gone (402 where 404 is right). The id, or None when it is gone."""
    if dialect_name(executor) == "sqlite":
        conn = executor if isinstance(executor, AsyncConnection) else await executor.connection()
        await begin_as_writer(conn)
    return await executor.scalar(
        select(Workspace.id)
        .where(Workspace.id == workspace_id)
        .with_for_update(read=True, key_share=True)
    )


async def lock_wallets(executor: Executor, workspace_ids: Sequence[str]) -> None:
    """Before an account's deletion cascades to its workspaces (PostgreSQL; SQLite has one
    writer and needs none): lock their wallets `FOR UPDATE` by id, the order every charge and
    posting locks wallet rows in. Left to the cascade, which detaches one workspace's wallets
    after the other's, the deletion of an account owning both sides of a call (an app, and the
    workspace calling it) could hold the builder's earnings wallet while the call held the
    caller's balance wallet, each waiting for the other's row (40P01: a 500). Only once the
    workspaces' rows are held `FOR UPDATE` (by id): no movement holding one (`hold_workspace`)
    then waits for these wallets, and no wallet of theirs is created meanwhile (its foreign key
    waits). Deleting one workspace needs none: a charge moves one wallet of a workspace, and
    other movements hold the workspace's row first."""
    if not workspace_ids or dialect_name(executor) == "sqlite":
        return
    await executor.execute(
        select(Wallet.id)
        .where(Wallet.workspace_id.in_(workspace_ids))
        .order_by(Wallet.id)
        .with_for_update()
    )


@dataclass(frozen=True, slots=True)
class Welcome:
    """Welcome credits claimed for an account (its `welcome_grants` row is written), still to be
    posted into the workspace's new balance wallet. Posting locks the issuance wallet, which
    sorts last: post it after the transaction's other postings (module docstring)."""

    wallet_id: str
    workspace_id: str
    account_id: str
    amount: int

    async def post(self, executor: Executor) -> str:
        return await post(
            executor,
            [
                Leg(PLATFORM_WALLETS["issuance"], None, -self.amount),
                Leg(self.wallet_id, self.workspace_id, self.amount),
            ],
            kind="welcome",
            account_id=self.account_id,
            note="welcome credits",
        )


def _insert_ignoring_conflicts(executor: Executor, model: Any, values: dict[str, Any]) -> Any:
    dialect = postgresql if dialect_name(executor) == "postgresql" else sqlite
    return dialect.insert(model).values(values).on_conflict_do_nothing()


def _insert_wallet(executor: Executor, values: dict[str, Any]) -> Any:
    """Insert a wallet only while its workspace exists, else nothing: an INSERT … SELECT from the
    workspace's row under the lock its foreign key would take (FOR KEY SHARE; on SQLite the
    write lock, which the statement takes before it reads). A workspace deleted since the
    request read it then waits out the deletion and inserts nothing, rather than failing on the
    foreign key (a 500)."""
    dialect = postgresql if dialect_name(executor) == "postgresql" else sqlite
    columns = [literal(value, Wallet.__table__.c[name].type) for name, value in values.items()]
    source = (
        select(*columns)
        .select_from(Workspace)
        .where(Workspace.id == values["workspace_id"])
        .with_for_update(read=True, key_share=True)
    )
    return dialect.insert(Wallet).from_select(list(values), source).on_conflict_do_nothing()


async def _claim_welcome(executor: Executor, workspace_id: str, now: datetime) -> str | None:
    """The workspace's owner, when this call is the one that records their welcome grant; None
    when the account already has one (another workspace of theirs, also one being created
    right now: PostgreSQL makes this INSERT wait for that transaction, then find its row)."""
    owner = await executor.scalar(select(Workspace.owner_id).where(Workspace.id == workspace_id))
    if owner is None:
        return None
    values = {"account_id": owner, "workspace_id": workspace_id, "created_at": now}
    result = await executor.execute(_insert_ignoring_conflicts(executor, WelcomeGrant, values))
    return str(owner) if result.rowcount == 1 else None  # type: ignore[attr-defined]


async def create_wallets(
    executor: Executor, workspace_id: str, *, welcome_credits: int = 0
) -> tuple[dict[str, str], bool, Welcome | None]:
    """The workspace's wallets (kind -> id), inserting any that are missing; whether this call
    created the balance wallet; and, when it did, the welcome credits its owner's account is
    due — claimed here, at most once per account whatever races, but not posted yet (the
    caller posts them after its own posting). Nothing but the wallets' SELECT when they all
    exist; 404 `workspace_not_found` when the workspace is gone. The caller commits."""
    found = await workspace_wallets(executor, workspace_id)
    if len(found) == len(WORKSPACE_KINDS):
        return found, False, None
    now = utcnow()
    created = False
    for kind in WORKSPACE_KINDS:
        if kind in found:
            continue
        value = {
            "id": new_id(),
            "workspace_id": workspace_id,
            "kind": kind,
            "balance": 0,
            "held": 0,
            "created_at": now,
            "updated_at": now,
        }
        result = await executor.execute(_insert_wallet(executor, value))
        if kind == "balance" and result.rowcount == 1:  # type: ignore[attr-defined]
            created = True
    wallets = await workspace_wallets(executor, workspace_id)
    if len(wallets) < len(WORKSPACE_KINDS):  # the workspace was deleted since it was read
        raise NotFoundError("Workspace not found", reason="workspace_not_found")
    welcome = None
    if created and welcome_credits > 0:
        account_id = await _claim_welcome(executor, workspace_id, now)
        if account_id is not None:
            welcome = Welcome(wallets["balance"], workspace_id, account_id, welcome_credits)
    return wallets, created, welcome


async def ensure_wallets(
    executor: Executor, workspace_id: str, *, welcome_credits: int = 0
) -> tuple[dict[str, str], bool]:
    """`create_wallets`, posting the welcome credits at once: for a transaction that posts
    nothing else before its commit, or only a movement of the same new balance wallet and a
    platform wallet (a top-up), which locks rows in the same order. The second value says
    whether this call created the balance wallet. The caller commits."""
    wallets, created, welcome = await create_wallets(
        executor, workspace_id, welcome_credits=welcome_credits
    )
    if welcome is not None:
        await welcome.post(executor)
    return wallets, created
