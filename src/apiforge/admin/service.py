"""Administration of accounts: list and search, disable or enable, delete with everything owned.

Spec 002: administrators may switch an account off or remove it, never edit its data.
"""

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.accounts.models import Account, LoginSession
from apiforge.admin.schemas import AccountStatus, AdminUserRead
from apiforge.billing.ledger import lock_wallets
from apiforge.core.db import UTCDateTime, lock_rows
from apiforge.core.errors import ConflictError, NotFoundError
from apiforge.http.pagination import Page, PageParams, fetch_page, order_by
from apiforge.idempotency.locking import NO_PRECONDITION, Precondition, advance, delete_row
from apiforge.keys.subscribers import ensure_unused
from apiforge.tools.clock import utcnow
from apiforge.tools.filters import icontains
from apiforge.tools.ids import is_id
from apiforge.workspaces.cleanup import leftovers_of
from apiforge.workspaces.models import Workspace

# Accounts that never signed in sort as the oldest logins on every backend (SQLite puts NULL
# first and PostgreSQL last, so NULL itself cannot be the sort key).
_NEVER = literal(datetime(1970, 1, 1, tzinfo=UTC), UTCDateTime())

SORTABLE: dict[str, ColumnElement[Any]] = {
    "createdTime": Account.created_at.expression,
    "email": Account.email.expression,
    "lastLoginTime": func.coalesce(Account.last_login_at, _NEVER),
}


class AdminUserService:
    """Every method assumes the caller is an active administrator (the `AdminAccount` guard)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_users(
        self, params: PageParams, q: str = "", status: AccountStatus | None = None
    ) -> Page[AdminUserRead]:
        """Search email and name case-insensitively; `%` and `_` in `q` match themselves."""
        stmt = select(Account)
        if q:
            stmt = stmt.where(
                or_(
                    icontains(Account.email, q),
                    icontains(Account.name, q),
                )
            )
        if status is not None:
            stmt = stmt.where(Account.status == status.value)
        stmt = order_by(
            stmt, params, SORTABLE, default="createdTime", tiebreak=Account.id.expression
        )
        rows, total = await fetch_page(self.session, stmt, params)
        return params.page([AdminUserRead.model_validate(row) for row in rows], total)

    async def get_user(self, user_id: str) -> Account:
        # Not an id (e.g. holding NUL, which PostgreSQL refuses as a parameter): no such account.
        account = await self.session.get(Account, user_id) if is_id(user_id) else None
        if account is None:
            raise NotFoundError("User not found", reason="user_not_found")
        return account

    async def set_status(
        self,
        actor: Account,
        user_id: str,
        status: AccountStatus,
        precondition: Precondition = NO_PRECONDITION,
    ) -> Account:
        """Disable or enable an account. Disabling also ends every sign-in session, so refresh
        tokens die with it (access tokens already fail the status check on each request).
        Enabling does not bring sessions back: the user signs in again."""
        account = await self.get_user(user_id)
        advance(account, precondition)
        if status is AccountStatus.DISABLED:
            self._refuse_self(actor, account)
            if account.status == AccountStatus.DISABLED:
                return account
            await self._lock_active_admins(account)
            account.status = AccountStatus.DISABLED.value
            await self.session.flush()
            await self._ensure_an_admin_remains(account.is_admin)
            await self._revoke_sessions(account.id)
        elif account.status != AccountStatus.ACTIVE:
            account.status = AccountStatus.ACTIVE.value
            await self.session.flush()
        return account

    async def delete_user(
        self,
        actor: Account,
        user_id: str,
        precondition: Precondition = NO_PRECONDITION,
        *,
        force: bool = False,
        app_changed: Callable[[str], None] = lambda app_id: None,
        workspaces_gone: Callable[[Sequence[str]], None] | None = None,
        files_gone: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        """Delete the account; the database cascades to its sessions, refresh tokens, settings,
        memberships and the workspaces it owns (with their members, apps, keys and
        subscriptions). `If-Match` is checked (412) and the DELETE is conditional on the version
        checked (409). As for deleting a workspace: while other workspaces have one of its
        workspaces' apps enabled, only with `force` (409 `app_in_use`)."""
        account = await self.get_user(user_id)
        self._refuse_self(actor, account)
        precondition.check(account.version)
        owned = await self._owned_workspaces(account.id)
        leftovers = await leftovers_of(self.session, owned)  # holds their apps, by id
        await leftovers.drop_indexes(self.session)  # the records table before workspace rows
        await self._hold_owned(owned)
        if not force:
            await ensure_unused(self.session, owned)
        await self._lock_active_admins(account)
        await self._ensure_owned_unchanged(account.id, owned)
        was_admin = account.is_admin
        await lock_wallets(self.session, owned)  # by id, as calls' charges lock them
        await delete_row(self.session, account, precondition)
        await leftovers.delete(self.session, app_changed, workspaces_gone, files_gone)
        await self._ensure_an_admin_remains(was_admin)

    async def _owned_workspaces(self, account_id: str) -> list[str]:
        """The workspaces the account owns, locked until commit so that no ownership transfer
        moves one away between the clean-up below and the cascade: a no-op UPDATE (SQLite's
        write lock; on PostgreSQL a lock money movements' and record writes' `FOR KEY SHARE`
        does not wait for). By id."""
        await lock_rows(self.session, Workspace, Workspace.owner_id == account_id)
        rows = await self.session.scalars(
            select(Workspace.id).where(Workspace.owner_id == account_id).order_by(Workspace.id)
        )
        return list(rows.all())

    async def _hold_owned(self, owned: list[str]) -> None:
        """PostgreSQL: their rows `FOR UPDATE` by id, the order in which movements
        (`hold_workspace`) and record writes (`datasets/holding.py`) hold workspace rows, and
        after their collections' indexes are dropped (the records table, which such a write
        holds first): left to the cascade, which deletes them in its own order, the deletion
        and a redemption or a call could each hold a row the other waits for."""
        if owned:
            await self.session.execute(
                select(Workspace.id)
                .where(Workspace.id.in_(owned))
                .order_by(Workspace.id)
                .with_for_update()
            )

    async def _ensure_owned_unchanged(self, account_id: str, owned: list[str]) -> None:
        """409 `concurrent_update` when a workspace was handed to the account since `owned` was
        read: the cascade would take it unchecked (`app_in_use`) and uncleaned. The account's
        row is locked first (where the DELETE would lock it: admins before it), and a transfer
        locks it too (`WorkspaceService._lock_account`): one that committed meanwhile is seen
        here, one still to come waits and then finds no account (404). Only PostgreSQL gets
        the 409: on SQLite the workspaces' lock above already waited for the transfer."""
        await lock_rows(self.session, Account, Account.id == account_id)
        rows = await self.session.scalars(
            select(Workspace.id).where(Workspace.owner_id == account_id).order_by(Workspace.id)
        )
        if list(rows.all()) != owned:
            raise ConflictError(
                "The account was handed a workspace meanwhile; try again",
                reason="concurrent_update",
            )

    @staticmethod
    def _refuse_self(actor: Account, account: Account) -> None:
        if actor.id == account.id:
            raise ConflictError(
                "Administrators cannot disable or delete their own account",
                reason="cannot_modify_self",
            )

    async def _lock_active_admins(self, account: Account) -> None:
        # Two admins switching each other off at once must not leave none. On PostgreSQL the
        # row locks (taken in id order, so never a deadlock) make the second request wait and
        # then see the first one's change; SQLite has one writer, so the count taken after our
        # own write is already current.
        if account.is_admin:
            await self.session.execute(
                select(Account.id)
                .where(Account.is_admin.is_(True), Account.status == AccountStatus.ACTIVE.value)
                .order_by(Account.id)
                .with_for_update()
            )

    async def _ensure_an_admin_remains(self, changed_admin: bool) -> None:
        """Checked after our own change, so the count includes it (and, after the lock, any
        concurrent one)."""
        if not changed_admin:
            return
        remaining = await self.session.scalar(
            select(func.count())
            .select_from(Account)
            .where(Account.is_admin.is_(True), Account.status == AccountStatus.ACTIVE.value)
        )
        if not remaining:
            raise ConflictError(
                "The last active administrator cannot be disabled or deleted",
                reason="last_admin",
            )

    async def _revoke_sessions(self, account_id: str) -> None:
        await self.session.execute(
            update(LoginSession)
            .where(LoginSession.account_id == account_id, LoginSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason="account_disabled")
            .execution_options(synchronize_session=False)
        )
