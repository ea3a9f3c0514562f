"""Workspaces and memberships: the current-workspace context, role rules, quotas, CRUD.

Authorization lives here, not in routers: every method that changes something takes the
`CurrentWorkspace` (built only from the caller's Membership row) and checks the role itself, so
no route can forget a check and the rules are testable without HTTP.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from apiforge.accounts.models import Account
from apiforge.core.db import after_commit, lock_rows
from apiforge.core.errors import (
    ConflictError,
    ForbiddenError,
    NotFoundError,
    UnavailableError,
    ValidationError,
)
from apiforge.core.integrity import violation
from apiforge.http.pagination import Page, PageParams, fetch_page, order_by
from apiforge.http.schemas import Created
from apiforge.idempotency.locking import NO_PRECONDITION, Precondition, advance, delete_row
from apiforge.keys.subscribers import ensure_unused
from apiforge.plans.models import Plan
from apiforge.plans.service import (
    account_plan,
    check_quota,
    count_members,
    count_owned_workspaces,
    lock_workspace,
    plan_of,
)
from apiforge.tools.ids import is_id
from apiforge.workspaces.cleanup import leftovers_of
from apiforge.workspaces.models import Membership, Role, Workspace
from apiforge.workspaces.schemas import (
    MemberCreate,
    MemberRead,
    MemberUpdate,
    OwnershipTransfer,
    WorkspaceCreate,
    WorkspaceRead,
    WorkspaceUpdate,
)

# `sort` whitelists (`.expression`: the column itself, as `order_by` is typed for).
WORKSPACE_SORTS: dict[str, ColumnElement[Any]] = {
    "name": Workspace.name.expression,
    "createdTime": Workspace.created_at.expression,
}
MEMBER_SORTS: dict[str, ColumnElement[Any]] = {
    "createdTime": Membership.created_at.expression,
    "name": Account.name.expression,
    "email": Account.email.expression,
}


async def default_plan_id(session: AsyncSession) -> str:
    plan_id = await session.scalar(select(Plan.id).where(Plan.is_default.is_(True)).limit(1))
    if plan_id is None:
        raise UnavailableError("No default plan is configured", reason="no_default_plan")
    return plan_id


async def create_workspace(
    session: AsyncSession, owner_id: str, name: str, *, personal: bool = False
) -> Workspace:
    """Create a workspace on the default plan with `owner_id` as its owner member (no checks:
    callers decide whether the account may own another one)."""
    workspace = Workspace(
        name=name, personal=personal, owner_id=owner_id, plan_id=await default_plan_id(session)
    )
    session.add(workspace)
    await session.flush()
    session.add(Membership(workspace_id=workspace.id, account_id=owner_id, role=Role.OWNER))
    await session.flush()
    return workspace


async def personal_workspace_id(session: AsyncSession, account_id: str) -> str | None:
    return await session.scalar(
        select(Workspace.id).where(Workspace.owner_id == account_id, Workspace.personal.is_(True))
    )


async def is_member(session: AsyncSession, account_id: str, workspace_id: str) -> bool:
    """Whether `account_id` belongs to `workspace_id` (a malformed id belongs to no one)."""
    if not is_id(workspace_id):
        return False
    stmt = select(Membership.role).where(
        Membership.workspace_id == workspace_id, Membership.account_id == account_id
    )
    return (await session.scalar(stmt.limit(1))) is not None


class WorkspaceNotFoundError(NotFoundError):
    """Unknown, malformed, or not the caller's: one answer, so ids of others never leak."""

    reason = "workspace_not_found"
    message = "Workspace not found"


class MemberNotFoundError(NotFoundError):
    reason = "member_not_found"
    message = "Member not found"


class InsufficientRoleError(ForbiddenError):
    """403 `insufficient_role`; `data.requiredRole` names the least role that would do."""

    reason = "insufficient_role"

    def __init__(self, required: Role, actual: Role) -> None:
        super().__init__(
            f"This action needs the {required.value} role or higher",
            details={"requiredRole": required.value, "role": actual.value},
        )


@dataclass(frozen=True, slots=True)
class CurrentWorkspace:
    """The workspace a request acts in and the caller's role there.

    `WorkspaceService.resolve` builds it from the caller's Membership row (a later credential,
    such as a workspace key acting with a chosen role, builds it from the key), so holding one
    proves access; `require` then checks the rank an action needs.
    """

    workspace: Workspace
    account_id: str
    role: Role

    @property
    def id(self) -> str:
        return self.workspace.id

    def require(self, minimum: Role) -> None:
        """Raise 403 `insufficient_role` unless the caller's role is at least `minimum`."""
        if not self.role.at_least(minimum):
            raise InsufficientRoleError(minimum, self.role)


def ensure_grantable(role: Role) -> None:
    """`owner` is never granted or assigned; ownership moves only by transfer. Since only admins
    and the owner may grant roles, this also keeps anyone from granting a role above their own."""
    if role is Role.OWNER:
        raise ValidationError(
            "The owner role cannot be granted; transfer ownership instead",
            reason="owner_not_grantable",
            errors=[{"field": "role", "message": "must be viewer, editor or admin"}],
        )


def ensure_outranks(actor: Role, target: Role) -> None:
    """Changing or removing a member needs a strictly higher rank than theirs; the owner outranks
    everyone. An admin therefore cannot touch another admin."""
    if actor is not Role.OWNER and actor.rank <= target.rank:
        required = list(Role)[min(target.rank + 1, Role.OWNER.rank)]
        raise InsufficientRoleError(required, actor)


class WorkspaceService:
    """Workspace and member management for one request. Never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def resolve(self, account_id: str, workspace_id: str | None) -> CurrentWorkspace:
        """The caller's membership of `workspace_id` (default: their personal workspace)."""
        if workspace_id is None:
            workspace_id = await personal_workspace_id(self.session, account_id)
        if workspace_id is None or not is_id(workspace_id):
            raise WorkspaceNotFoundError()
        row = (
            await self.session.execute(
                select(Workspace, Membership.role)
                .join(Membership, Membership.workspace_id == Workspace.id)
                .where(Workspace.id == workspace_id, Membership.account_id == account_id)
            )
        ).first()
        if row is None:
            raise WorkspaceNotFoundError()
        return CurrentWorkspace(workspace=row[0], account_id=account_id, role=Role(row[1]))

    async def list_workspaces(self, account_id: str, params: PageParams) -> Page[WorkspaceRead]:
        stmt = (
            select(Workspace)
            .join(Membership, Membership.workspace_id == Workspace.id)
            .where(Membership.account_id == account_id)
        )
        stmt = order_by(
            stmt,
            params,
            WORKSPACE_SORTS,
            default="createdTime",
            tiebreak=Workspace.id.expression,
            default_order="asc",  # the personal workspace, created first, leads the list
        )
        rows, total = await fetch_page(self.session, stmt, params)
        ids = [w.id for w in rows]
        rows_roles = await self.session.execute(
            select(Membership.workspace_id, Membership.role).where(
                Membership.account_id == account_id, Membership.workspace_id.in_(ids)
            )
        )
        roles: dict[str, str] = dict(rows_roles.all())
        counts = await self._member_counts(ids)
        items = [self._read(w, Role(roles[w.id]), counts.get(w.id, 0)) for w in rows]
        return params.page(items, total)

    async def create(self, account_id: str, data: WorkspaceCreate) -> Created:
        """A new (non-personal) workspace owned by the caller, within the number of workspaces the
        caller's own plan (that of their personal workspace) lets them own."""
        await self._lock_account(account_id)
        owned = await count_owned_workspaces(self.session, account_id)
        await check_quota(
            self.session,
            None,
            await account_plan(self.session, account_id),
            "workspaces",
            owned,
            operation="workspaces.create",
            account_id=account_id,
        )
        workspace = await create_workspace(self.session, account_id, data.name)
        return Created(id=workspace.id)

    async def read(self, current: CurrentWorkspace) -> WorkspaceRead:
        return self._read(
            current.workspace, current.role, await count_members(self.session, current.id)
        )

    async def rename(
        self,
        current: CurrentWorkspace,
        data: WorkspaceUpdate,
        precondition: Precondition = NO_PRECONDITION,
    ) -> WorkspaceRead:
        current.require(Role.ADMIN)
        advance(current.workspace, precondition)
        current.workspace.name = data.name
        await self.session.flush()
        return await self.read(current)

    async def delete(
        self,
        current: CurrentWorkspace,
        precondition: Precondition = NO_PRECONDITION,
        *,
        force: bool = False,
        app_changed: Callable[[str], None] = lambda app_id: None,
        workspaces_gone: Callable[[Sequence[str]], None] | None = None,
        files_gone: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        """Owner only; the personal workspace lives as long as its account. Memberships (and
        everything else keyed to the workspace) go with it through ON DELETE CASCADE. `If-Match`
        is checked (412) and the DELETE is conditional on the version checked (409). While other
        workspaces have one of its apps enabled, only with `force` (409 `app_in_use`).

        Lock order (docs/decisions.md): the workspace's row as member changes take it; its apps
        `FOR NO KEY UPDATE` (`leftovers_of`), as an app's deletion takes its app, so one in
        flight is waited for and one coming later waits (then 404); its collections' indexes
        (the records table, `Leftovers.drop_indexes`); the row `FOR UPDATE` (PostgreSQL),
        before anything a call writing into the workspace holds — such a write holds the row
        `FOR KEY SHARE` first (`datasets/holding.py`; a subscription or key change,
        `keys/holding.py`), so the deletion waits for it, or it for the deletion (then 404);
        then its apps `FOR UPDATE` (`ensure_unused`): an app created
        or enabled by another workspace meanwhile waits, instead of its cascade taking it
        unchecked."""
        current.require(Role.OWNER)
        precondition.check(current.workspace.version)
        if current.workspace.personal:
            raise ConflictError(
                "The personal workspace cannot be deleted", reason="personal_workspace"
            )
        await self._lock_workspace(current.id)
        leftovers = await leftovers_of(self.session, [current.id])
        await leftovers.drop_indexes(self.session)
        await self.session.execute(
            select(Workspace.id).where(Workspace.id == current.id).with_for_update()
        )
        if not force:
            await ensure_unused(self.session, [current.id])
        await delete_row(self.session, current.workspace, precondition)
        await leftovers.delete(self.session, app_changed, workspaces_gone, files_gone)

    async def list_members(self, current: CurrentWorkspace, params: PageParams) -> Page[MemberRead]:
        stmt = (
            select(Membership)
            .join(Account, Account.id == Membership.account_id)
            .where(Membership.workspace_id == current.id)
        )
        stmt = order_by(
            stmt,
            params,
            MEMBER_SORTS,
            default="createdTime",
            tiebreak=Membership.account_id.expression,
            default_order="asc",
        )
        rows, total = await fetch_page(self.session, stmt, params)
        accounts = await self._accounts([m.account_id for m in rows])
        return params.page([self._member(m, accounts[m.account_id]) for m in rows], total)

    async def add_member(self, current: CurrentWorkspace, data: MemberCreate) -> Created:
        """Admins add an existing, active account (409 `member_disabled` otherwise, judged as
        in `transfer`) with a role they may grant, within the plan's `members` quota."""
        current.require(Role.ADMIN)
        ensure_grantable(data.role)
        email = str(data.email).strip().lower()
        account = await self.session.scalar(select(Account).where(Account.email == email))
        if account is None:
            raise NotFoundError("No account has this email", reason="account_not_found")
        current = await self._locked(current, Role.ADMIN)
        if await self._membership(current.id, account.id) is not None:
            raise ConflictError("Already a member of this workspace", reason="already_member")
        await self._lock_account(account.id)
        await self._ensure_active(account.id, "it cannot join a workspace")
        used = await count_members(self.session, current.id)
        plan = await plan_of(self.session, current.workspace)
        await check_quota(self.session, current.id, plan, "members", used, operation="members.add")
        self.session.add(Membership(workspace_id=current.id, account_id=account.id, role=data.role))
        try:
            await self.session.flush()
        except IntegrityError as exc:
            # The workspace row is ours until commit: a missing row can only be the account,
            # deleted since it was read (a 500 on the foreign key otherwise).
            if violation(exc).kind != "foreign_key":
                raise
            raise NotFoundError("No account has this email", reason="account_not_found") from None
        return Created(id=account.id)

    async def update_member(
        self,
        current: CurrentWorkspace,
        account_id: str,
        data: MemberUpdate,
        precondition: Precondition = NO_PRECONDITION,
        *,
        member_changed: Callable[[str, str], None] | None = None,
    ) -> MemberRead:
        """Admins change the role of members ranked below them, to a role they may grant; once
        it commits, `member_changed` as in `remove_member` (the keys carry the role)."""
        current.require(Role.ADMIN)
        ensure_grantable(data.role)
        current = await self._locked(current, Role.ADMIN)
        member = await self._member_of(current, account_id)
        if member.role == Role.OWNER:
            raise ConflictError(
                "The owner's role cannot change; transfer ownership instead",
                reason="owner_role_immutable",
            )
        ensure_outranks(current.role, Role(member.role))
        advance(member, precondition)
        member.role = data.role
        await self.session.flush()
        if member_changed is not None:
            after_commit(self.session, partial(member_changed, current.id, member.account_id))
        accounts = await self._accounts([member.account_id])
        return self._member(member, accounts[member.account_id])

    async def remove_member(
        self,
        current: CurrentWorkspace,
        account_id: str,
        precondition: Precondition = NO_PRECONDITION,
        *,
        member_changed: Callable[[str, str], None] | None = None,
    ) -> None:
        """Admins remove members ranked below them; anyone but the owner may leave. `If-Match`
        is checked (412) and the ORM's DELETE is conditional on the version checked. Once it
        commits, `member_changed(workspace id, account id)` (this node's key cache: the
        member's `ws-` keys stop at once)."""
        if account_id == current.account_id:
            current = await self._locked(current, Role.VIEWER)
            if current.role is Role.OWNER:
                raise ConflictError(
                    "The owner cannot leave; transfer ownership or delete the workspace",
                    reason="owner_cannot_leave",
                )
            member = await self._member_of(current, account_id)
        else:
            current.require(Role.ADMIN)
            current = await self._locked(current, Role.ADMIN)
            member = await self._member_of(current, account_id)
            if member.role == Role.OWNER:
                raise ConflictError("The owner cannot be removed", reason="owner_cannot_be_removed")
            ensure_outranks(current.role, Role(member.role))
        precondition.check(member.version)
        await self.session.delete(member)
        await self.session.flush()
        if member_changed is not None:
            after_commit(self.session, partial(member_changed, current.id, member.account_id))

    async def transfer(
        self,
        current: CurrentWorkspace,
        data: OwnershipTransfer,
        *,
        member_changed: Callable[[str, str], None] | None = None,
    ) -> WorkspaceRead:
        """Hand ownership to an existing member; the old owner stays on as admin. The new owner's
        own plan must allow them one more owned workspace, and their account must be active
        (409 `member_disabled`): a disabled owner could neither delete the workspace nor hand
        it back. Once it commits, `member_changed` for both (as in `update_member`)."""
        current.require(Role.OWNER)
        if current.workspace.personal:
            raise ConflictError(
                "A personal workspace cannot change owner", reason="personal_workspace"
            )
        if data.account_id == current.account_id:
            raise ConflictError("You already own this workspace", reason="already_owner")
        await self._lock_workspace(current.id)
        member = await self._member_of(current, data.account_id)
        await self._lock_account(member.account_id)
        await self._ensure_active(member.account_id, "ownership cannot go to it")
        owned = await count_owned_workspaces(self.session, member.account_id)
        await check_quota(
            self.session,
            None,
            await account_plan(self.session, member.account_id),
            "workspaces",
            owned,
            operation="workspaces.transfer",
            account_id=member.account_id,
        )
        old_owner = await self._member_of(current, current.account_id)
        # Each of the three rows takes a new version: their ETags change, and the UPDATEs are
        # conditional on the versions read, so a concurrent transfer (or a change to either
        # member) gets 409 `concurrent_update` instead of leaving two owners.
        for row in (old_owner, member, current.workspace):
            advance(row, NO_PRECONDITION)
        old_owner.role = Role.ADMIN
        member.role = Role.OWNER
        current.workspace.owner_id = member.account_id
        await self.session.flush()
        if member_changed is not None:
            for account_id in (old_owner.account_id, member.account_id):
                after_commit(self.session, partial(member_changed, current.id, account_id))
        return self._read(
            current.workspace, Role.ADMIN, await count_members(self.session, current.id)
        )

    async def _member_of(self, current: CurrentWorkspace, account_id: str) -> Membership:
        member = await self._membership(current.id, account_id) if is_id(account_id) else None
        if member is None:
            raise MemberNotFoundError()
        return member

    async def _membership(self, workspace_id: str, account_id: str) -> Membership | None:
        return await self.session.get(Membership, (workspace_id, account_id))

    async def _lock_workspace(self, workspace_id: str) -> None:
        """Serialise quota-checked changes of one workspace until commit, so two requests cannot
        both pass the same count (`plans.service.lock_workspace`: a no-op UPDATE rather than
        SELECT ... FOR UPDATE because it locks on both backends — the row on PostgreSQL, the
        database's write lock on SQLite, whose driver starts the transaction at the first write,
        so reads before it see no snapshot). 404 when a concurrent request deleted it."""
        await lock_workspace(self.session, workspace_id)

    async def _locked(self, current: CurrentWorkspace, minimum: Role) -> CurrentWorkspace:
        """`current` with the caller's role as committed, read under the workspace's lock, and
        checked against `minimum` (403). Every change of who belongs or in what role takes that
        lock first (add, role change, removal, transfer, delete; then member rows), so an actor
        demoted, removed or made owner at the same moment is judged on that, not on the role
        read with `current`. 404 `workspace_not_found` once no longer a member."""
        await self._lock_workspace(current.id)
        role = await self.session.scalar(
            select(Membership.role).where(
                Membership.workspace_id == current.id,
                Membership.account_id == current.account_id,
            )
        )
        if role is None:
            raise WorkspaceNotFoundError()
        current = replace(current, role=Role(role))
        current.require(minimum)
        return current

    async def _ensure_active(self, account_id: str, refused: str) -> None:
        """409 `member_disabled` unless the account is active (`refused`: what it cannot do).
        Read after `_lock_account`: a disabling in flight is waited for (its row lock on
        PostgreSQL, the write lock on SQLite) and judged as committed, never as read before it."""
        status = await self.session.scalar(select(Account.status).where(Account.id == account_id))
        if status != "active":
            raise ConflictError(f"This account is disabled; {refused}", reason="member_disabled")

    async def _lock_account(self, account_id: str) -> None:
        """The same for the number of workspaces one account owns; 404 `account_not_found` when
        the account was deleted meanwhile (the owner written next would fail its foreign key)."""
        if not await lock_rows(self.session, Account, Account.id == account_id):
            raise NotFoundError("Account not found", reason="account_not_found")

    async def _member_counts(self, workspace_ids: list[str]) -> dict[str, int]:
        if not workspace_ids:
            return {}
        rows = await self.session.execute(
            select(Membership.workspace_id, func.count())
            .where(Membership.workspace_id.in_(workspace_ids))
            .group_by(Membership.workspace_id)
        )
        return {workspace_id: int(n) for workspace_id, n in rows}

    async def _accounts(self, account_ids: list[str]) -> dict[str, Account]:
        if not account_ids:
            return {}
        rows = await self.session.scalars(select(Account).where(Account.id.in_(account_ids)))
        return {a.id: a for a in rows}

    @staticmethod
    def _read(workspace: Workspace, role: Role, member_count: int) -> WorkspaceRead:
        return WorkspaceRead(
            id=workspace.id,
            name=workspace.name,
            personal=workspace.personal,
            owner_id=workspace.owner_id,
            plan_id=workspace.plan_id,
            role=role,
            member_count=member_count,
            version=workspace.version,
            created_time=workspace.created_at,
            updated_time=workspace.updated_at,
        )

    @staticmethod
    def _member(member: Membership, account: Account) -> MemberRead:
        return MemberRead(
            account_id=account.id,
            email=account.email,
            name=account.name,
            role=Role(member.role),
            version=member.version,
            created_time=member.created_at,
        )
