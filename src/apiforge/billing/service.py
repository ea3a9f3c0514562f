"""Wallet, ledger, redemption and withdrawal operations of the management API.

Every movement goes through `ledger.post` inside the request's unit of work (committed by the
session dependency). Credits to spendable wallets are also told to the gateway's in-process
wallet cache (SQLite), after the commit, so its reservations stay exact (`charging.py`).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, event, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from apiforge.billing.charging import MemoryWallets
from apiforge.billing.ledger import (
    InsufficientFundsError,
    Leg,
    create_wallets,
    ensure_wallets,
    hold_workspace,
    post,
    workspace_wallets,
)
from apiforge.billing.models import PLATFORM_WALLETS, LedgerEntry, Wallet, Withdrawal
from apiforge.billing.schemas import (
    EarningRow,
    EarningsReport,
    LedgerEntryRead,
    RedemptionRead,
    WalletRead,
    WithdrawalRead,
)
from apiforge.core.errors import ConflictError, NotFoundError, ValidationError
from apiforge.core.integrity import violation
from apiforge.http.pagination import Page, PageParams, fetch_page, order_by, sort_field
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import is_id
from apiforge.usage.charts import bucket_label_sql
from apiforge.workspaces.models import Membership, Role, Workspace
from apiforge.workspaces.service import CurrentWorkspace, WorkspaceNotFoundError

ENTRY_SORTS = {"createdTime": LedgerEntry.created_at.expression}
EARNINGS_SORTS = ("day",)  # a bucket of the dialect's own SQL, made per request
WITHDRAWAL_SORTS = {"createdTime": Withdrawal.created_at.expression}
_ENTRY_ID = LedgerEntry.id.expression
_WITHDRAWAL_ID = Withdrawal.id.expression


class WithdrawalNotFoundError(NotFoundError):
    reason = "withdrawal_not_found"
    message = "Withdrawal not found"


class WithdrawalDecidedError(ConflictError):
    reason = "withdrawal_already_decided"
    message = "This withdrawal was already approved or rejected"


@dataclass(frozen=True, slots=True)
class EntryFilter:
    kind: str | None = None
    app_id: str | None = None
    wallet_kind: str | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class BillingService:
    def __init__(self, session: AsyncSession, welcome_credits: int, memory: MemoryWallets | None):
        self.session = session
        self.welcome_credits = welcome_credits
        self.memory = memory

    async def wallet_ids(self, workspace_id: str) -> dict[str, str]:
        wallets, _ = await ensure_wallets(
            self.session, workspace_id, welcome_credits=self.welcome_credits
        )
        return wallets

    async def earnings_wallet(self, workspace_id: str, amount: int) -> str:
        """The workspace's earnings wallet, to move `amount` RU out of: 402 when it has none yet
        (it earned nothing; `data.walletId` null). Not created here: creating a workspace's
        wallets grants its owner's welcome credits, which would lock the issuance wallet before
        the movement's rows (the lock order in `billing/ledger.py`) for a request bound to fail."""
        wallet = await self._earnings_wallet(workspace_id)
        if wallet is None:
            raise InsufficientFundsError(
                "The workspace has no earnings to move yet",
                details={"walletId": None, "required": amount},
            )
        return wallet

    async def _hold(self, workspace_id: str) -> None:
        """`hold_workspace` before a movement of the workspace's wallets; 404 when it is gone."""
        if await hold_workspace(self.session, workspace_id) is None:
            raise WorkspaceNotFoundError()

    async def _earnings_wallet(self, workspace_id: str) -> str | None:
        """The workspace's earnings wallet, None when it has none yet, never created here: the
        lists of what it earned are reads, and creating wallets would write (and grant the
        owner's welcome credits) for a GET."""
        return (await workspace_wallets(self.session, workspace_id)).get("earnings")

    async def wallets(self, workspace_id: str) -> list[WalletRead]:
        await self.wallet_ids(workspace_id)
        rows = await self.session.execute(
            select(Wallet.id, Wallet.kind, Wallet.balance, Wallet.updated_at)
            .where(Wallet.workspace_id == workspace_id)
            .order_by(Wallet.kind)
        )
        return [
            WalletRead(id=r.id, kind=r.kind, balance=r.balance, updated_time=r.updated_at)
            for r in rows
        ]

    async def platform_wallets(self) -> list[WalletRead]:
        """The platform's wallets: revenue, issuance (minus all RU ever issued), escrow and
        payouts. With every workspace wallet they sum to zero."""
        rows = await self.session.execute(
            select(Wallet.id, Wallet.kind, Wallet.balance, Wallet.updated_at)
            .where(Wallet.id.in_(list(PLATFORM_WALLETS.values())))
            .order_by(Wallet.kind)
        )
        return [
            WalletRead(id=r.id, kind=r.kind, balance=r.balance, updated_time=r.updated_at)
            for r in rows
        ]

    async def balance_of(self, wallet_id: str) -> int:
        return int(
            await self.session.scalar(select(Wallet.balance).where(Wallet.id == wallet_id)) or 0
        )

    def _credits_spendable(self, wallet_id: str, amount: int) -> None:
        """Tell the gateway's wallet cache about a credit once its commit (or rollback) is
        known; until then its balance isn't re-read into the cache."""
        memory = self.memory
        if memory is None:
            return
        memory.begin_write(wallet_id)
        sync_session: Session = self.session.sync_session
        done = False

        def committed(_session: Session) -> None:
            nonlocal done
            if not done:
                done = True
                memory.end_write(wallet_id, amount)

        def rolled_back(_session: Session) -> None:
            nonlocal done
            if not done:
                done = True
                memory.end_write(wallet_id, 0)

        event.listen(sync_session, "after_commit", committed, once=True)
        event.listen(sync_session, "after_rollback", rolled_back, once=True)

    async def top_up(
        self, admin_id: str, workspace_id: str, amount: int, note: str
    ) -> tuple[str, int]:
        """An admin credits a workspace's spendable wallet from the issuance wallet."""
        if not is_id(workspace_id) or await self.session.get(Workspace, workspace_id) is None:
            raise WorkspaceNotFoundError()
        wallet = (await self.wallet_ids(workspace_id))["balance"]
        self._credits_spendable(wallet, amount)
        transaction_id = await post(
            self.session,
            [
                Leg(PLATFORM_WALLETS["issuance"], None, -amount),
                Leg(wallet, workspace_id, amount),
            ],
            kind="topup",
            account_id=admin_id,
            note=note,
        )
        return transaction_id, await self.balance_of(wallet)

    async def entries(
        self, workspace_id: str, filters: EntryFilter, params: PageParams
    ) -> Page[LedgerEntryRead]:
        stmt: Any = (
            select(LedgerEntry, Wallet.kind.label("wallet_kind"))
            .join(Wallet, Wallet.id == LedgerEntry.wallet_id)
            .where(LedgerEntry.workspace_id == workspace_id)
        )
        if filters.kind is not None:
            stmt = stmt.where(LedgerEntry.kind == filters.kind)
        if filters.app_id is not None:
            stmt = stmt.where(LedgerEntry.app_id == filters.app_id)
        if filters.wallet_kind is not None:
            stmt = stmt.where(Wallet.kind == filters.wallet_kind)
        if filters.request_id is not None:
            # Read within the workspace's index range: no index of its own, which every
            # charged call's entries would pay for (`ix_ledger_entries_workspace_created`).
            stmt = stmt.where(LedgerEntry.request_id == filters.request_id)
        if filters.since is not None:
            stmt = stmt.where(LedgerEntry.created_at >= filters.since)
        if filters.until is not None:
            stmt = stmt.where(LedgerEntry.created_at < filters.until)
        stmt = order_by(
            stmt, params, ENTRY_SORTS, "createdTime", tiebreak=LedgerEntry.id.expression
        )
        total = int(
            await self.session.scalar(
                select(func.count()).select_from(stmt.order_by(None).subquery())
            )
            or 0
        )
        rows = await self.session.execute(stmt.limit(params.page_size).offset(params.offset))
        items = [_entry(row.LedgerEntry, row.wallet_kind) for row in rows]
        return params.page(items, total)

    async def redeem(
        self,
        current: CurrentWorkspace,
        amount: int,
        target_workspace_id: str | None,
        *,
        by_workspace_key: bool = False,
    ) -> str:
        """Earned RU of the current workspace into a spendable wallet of a workspace the caller
        belongs to (the current one by default). Needs the admin role where the RU come from.
        A `ws-` key acts only in its own workspace: another target is the same 404 as an
        unknown one (moving RU out would act elsewhere, and tell which workspaces its creator
        belongs to)."""
        current.require(Role.ADMIN)
        target = target_workspace_id or current.id
        if target != current.id and by_workspace_key:
            raise WorkspaceNotFoundError()
        if target != current.id:
            member = (
                await self.session.scalar(
                    select(Membership.role).where(
                        Membership.workspace_id == target,
                        Membership.account_id == current.account_id,
                    )
                )
                if is_id(target)
                else None
            )
            if member is None:
                raise WorkspaceNotFoundError()
        # Both workspaces' rows first, by id (`hold_workspace`): deleting one of them locks its
        # row before its wallets, which this posting updates in id order (a redemption within
        # one workspace moves two of its wallets, maybe in the other order than the deletion's).
        for workspace_id in sorted({current.id, target}):
            await self._hold(workspace_id)
        source = await self.earnings_wallet(current.id, amount)
        wallets, _, welcome = await create_wallets(
            self.session, target, welcome_credits=self.welcome_credits
        )
        destination = wallets["balance"]
        self._credits_spendable(destination, amount + (welcome.amount if welcome else 0))
        transaction_id = await post(
            self.session,
            [
                Leg(source, current.id, -amount, target),
                Leg(destination, target, amount, current.id),
            ],
            kind="redemption",
            account_id=current.account_id,
        )
        if welcome is not None:
            # After the redemption: its issuance row sorts after both of the redemption's.
            await welcome.post(self.session)
        return transaction_id

    async def redemptions(self, workspace_id: str, params: PageParams) -> Page[RedemptionRead]:
        """Redemptions out of the workspace's earnings (newest first); none before it has an
        earnings wallet (a read creates no wallet: `_earnings_wallet`)."""
        sort_field(params, ENTRY_SORTS, "createdTime")
        earnings = await self._earnings_wallet(workspace_id)
        if earnings is None:
            return params.page([], 0)
        stmt: Select[Any] = select(LedgerEntry).where(
            LedgerEntry.workspace_id == workspace_id,
            LedgerEntry.wallet_id == earnings,
            LedgerEntry.kind == "redemption",
        )
        stmt = order_by(
            stmt, params, ENTRY_SORTS, "createdTime", tiebreak=LedgerEntry.id.expression
        )
        rows, total = await fetch_page(self.session, stmt, params)
        items = [
            RedemptionRead(
                id=row.transaction_id,
                amount=-row.amount,
                target_workspace_id=row.counterparty_workspace_id,
                created_time=row.created_at,
            )
            for row in rows
        ]
        return params.page(items, total)

    async def request_withdrawal(
        self, current: CurrentWorkspace, amount: int, note: str
    ) -> Withdrawal:
        """Earned RU set aside in escrow until an admin decides: they can't be redeemed or
        withdrawn again meanwhile (402 when the earnings don't cover the amount)."""
        current.require(Role.ADMIN)
        await self._hold(current.id)  # 404 when deleted since it was resolved
        earnings = await self.earnings_wallet(current.id, amount)
        withdrawal = Withdrawal(
            workspace_id=current.id,
            amount=amount,
            status="requested",
            note=note,
            requested_by=current.account_id,
            decision_note="",
        )
        self.session.add(withdrawal)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            # Its only foreign key: the workspace, deleted since the request read it.
            if violation(exc).kind != "foreign_key":
                raise
            raise WorkspaceNotFoundError() from None
        await post(
            self.session,
            [
                Leg(earnings, current.id, -amount),
                Leg(PLATFORM_WALLETS["escrow"], None, amount, current.id),
            ],
            kind="withdrawal_request",
            reference_id=withdrawal.id,
            account_id=current.account_id,
            note=note[:200],
        )
        return withdrawal

    async def withdrawals(
        self, workspace_id: str | None, status: str | None, params: PageParams
    ) -> Page[WithdrawalRead]:
        stmt: Select[Any] = select(Withdrawal)
        if workspace_id is not None:
            stmt = stmt.where(Withdrawal.workspace_id == workspace_id)
        if status is not None:
            stmt = stmt.where(Withdrawal.status == status)
        stmt = order_by(
            stmt, params, WITHDRAWAL_SORTS, "createdTime", tiebreak=Withdrawal.id.expression
        )
        rows, total = await fetch_page(self.session, stmt, params)
        return params.page([withdrawal_read(row) for row in rows], total)

    async def decide_withdrawal(
        self, admin_id: str, withdrawal_id: str, status: str, note: str
    ) -> Withdrawal:
        """Approve (escrow → payouts: the RU leave the platform) or reject (escrow → the
        workspace's earnings). Exactly one decision wins, however many admins race."""
        withdrawal = (
            await self.session.get(Withdrawal, withdrawal_id) if is_id(withdrawal_id) else None
        )
        if withdrawal is None:
            raise WithdrawalNotFoundError()
        # A rejection moves the workspace's earnings wallet: its workspace's row is held first
        # (FOR KEY SHARE), before the withdrawal's row and the wallet's. Deleting the workspace
        # locks that row before its cascade detaches the wallets, then the withdrawals: taking
        # the withdrawal first, then the wallet, could make each wait for the other (a deadlock,
        # 500). None: the workspace is gone (also deleted since the withdrawal was read).
        workspace_id = withdrawal.workspace_id
        if status == "rejected" and workspace_id is not None:
            workspace_id = await hold_workspace(self.session, workspace_id)
        now = utcnow()
        decided = await self.session.execute(
            update(Withdrawal)
            .where(Withdrawal.id == withdrawal_id, Withdrawal.status == "requested")
            .values(
                status=status,
                decided_by=admin_id,
                decided_at=now,
                decision_note=note,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        if decided.rowcount != 1:  # type: ignore[attr-defined]
            raise WithdrawalDecidedError()
        escrow = PLATFORM_WALLETS["escrow"]
        if status == "approved":
            legs = [
                Leg(escrow, None, -withdrawal.amount, withdrawal.workspace_id),
                Leg(PLATFORM_WALLETS["payouts"], None, withdrawal.amount, withdrawal.workspace_id),
            ]
        else:
            # Only an existing earnings wallet: creating wallets here would grant welcome credits
            # (locking `issuance` before this posting's rows) and put the RU in a wallet nobody
            # had. None left means the workspace was deleted (its wallets were detached from it),
            # also while this request ran, after the withdrawal was read.
            earnings = None if workspace_id is None else await self._earnings_wallet(workspace_id)
            if earnings is None:
                raise ValidationError(
                    "The workspace of this withdrawal was deleted; it can only be approved",
                    reason="withdrawal_workspace_deleted",
                )
            legs = [
                Leg(escrow, None, -withdrawal.amount, withdrawal.workspace_id),
                Leg(earnings, withdrawal.workspace_id, withdrawal.amount),
            ]
        await post(
            self.session,
            legs,
            kind=f"withdrawal_{status}",
            reference_id=withdrawal.id,
            account_id=admin_id,
            note=note[:200],
            now=now,
        )
        await self.session.refresh(withdrawal)
        return withdrawal

    async def earnings(
        self,
        workspace_id: str,
        since: datetime | None,
        until: datetime | None,
        params: PageParams,
    ) -> EarningsReport:
        """Earnings of the workspace's apps per UTC day, app and API (newest day first), a page
        at a time as every list: a range of years over many APIs is that many rows. `total` is
        the whole range's. None before it has an earnings wallet (`_earnings_wallet`)."""
        sort_field(params, EARNINGS_SORTS, "day")
        earnings = await self._earnings_wallet(workspace_id)
        if earnings is None:
            return EarningsReport(**dict(params.page([], 0)), total=0)
        bind = self.session.bind
        dialect = bind.dialect.name if bind is not None else "sqlite"
        day = bucket_label_sql(LedgerEntry.created_at.expression, "day", dialect)
        conditions = [
            LedgerEntry.workspace_id == workspace_id,
            LedgerEntry.wallet_id == earnings,
            LedgerEntry.kind == "call",
        ]
        if since is not None:
            conditions.append(LedgerEntry.created_at >= since)
        if until is not None:
            conditions.append(LedgerEntry.created_at < until)
        grouped: Any = (
            select(
                day.label("day"),
                LedgerEntry.app_id,
                LedgerEntry.api,
                func.count().label("calls"),
                func.sum(LedgerEntry.amount).label("amount"),
            )
            .where(*conditions)
            .group_by(day, LedgerEntry.app_id, LedgerEntry.api)
        )
        stmt = order_by(grouped, params, {"day": day}, "day")
        stmt = stmt.order_by(LedgerEntry.app_id, LedgerEntry.api)
        count = await self.session.scalar(select(func.count()).select_from(grouped.subquery()))
        total = await self.session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(*conditions)
        )
        rows = await self.session.execute(stmt.limit(params.page_size).offset(params.offset))
        items = [
            EarningRow(
                day=str(r.day),
                app_id=r.app_id or "",
                api=r.api or "",
                calls=r.calls,
                amount=int(r.amount),
            )
            for r in rows
        ]
        page = params.page(items, int(count or 0))
        return EarningsReport(**dict(page), total=int(total or 0))


def _entry(row: LedgerEntry, wallet_kind: str) -> LedgerEntryRead:
    return LedgerEntryRead(
        id=row.id,
        transaction_id=row.transaction_id,
        wallet_id=row.wallet_id,
        wallet_kind=wallet_kind,
        amount=row.amount,
        kind=row.kind,
        created_time=row.created_at,
        app_id=row.app_id,
        api=row.api,
        request_id=row.request_id,
        counterparty_workspace_id=row.counterparty_workspace_id,
        reference_id=row.reference_id,
        note=row.note,
    )


def withdrawal_read(row: Withdrawal) -> WithdrawalRead:
    return WithdrawalRead(
        id=row.id,
        workspace_id=row.workspace_id,
        amount=row.amount,
        status=row.status,
        note=row.note,
        decision_note=row.decision_note,
        created_time=row.created_at,
        decided_time=row.decided_at,
    )


__all__: Sequence[str] = ["BillingService", "EntryFilter", "withdrawal_read"]
