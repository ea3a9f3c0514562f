"""Plans: admin CRUD with exactly one default, moving workspaces, quota checks and usage reports.

Counted quotas (members, workspaces, apps, uploadsPerMonth) are enforced where the counted thing
is created, under a lock, by whichever service creates it (`check_quota`, which also notes the
refusal in the quota-hit log); gateway calls and record writes are checked by the in-process meter
(`plans/meter.py`). This module reads limits and counts what exists.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from apiforge.builder.models import App
from apiforge.core.db import after_commit, lock_rows
from apiforge.core.errors import ConflictError, NotFoundError
from apiforge.files.usage import uploads_this_month
from apiforge.http.pagination import Page, PageParams, fetch_page, order_by
from apiforge.http.schemas import Created
from apiforge.idempotency.locking import NO_PRECONDITION, Precondition, advance
from apiforge.plans.meter import quota_meter, stock_of
from apiforge.plans.models import FREE_PLAN_QUOTAS, QUOTA_NAMES, Plan, QuotaHit
from apiforge.plans.quotas import (
    MONTHLY_QUOTAS,
    UNLIMITED,
    QuotaExceededError,
    ensure_within_quota,
    full_quotas,
    near_limit,
    quota_limit,
)
from apiforge.plans.schemas import (
    PlanCreate,
    PlanRead,
    PlanUpdate,
    QuotaHitRead,
    QuotaUsage,
    UserPlans,
    WorkspacePlanRead,
    WorkspacePlanUpdate,
)
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import is_id
from apiforge.usage.counters import calls_this_month, next_month_start
from apiforge.workspaces.models import Membership, Workspace

__all__ = [
    "UNLIMITED",
    "PlanNotFoundError",
    "PlanService",
    "QuotaExceededError",
    "account_plan",
    "check_quota",
    "ensure_within_quota",
    "full_quotas",
    "lock_workspace",
    "near_limit",
    "plan_of",
    "quota_limit",
]

# Rate limits are ceilings on traffic, not stock that accumulates, so `/user/plans` shows them in
# `currentPlan.quotas` but not in `usage`.
RATE_QUOTAS = frozenset({"requestsPerMinute", "concurrentRequests"})

PLAN_SORTS: dict[str, ColumnElement[Any]] = {
    "createdTime": Plan.created_at.expression,
    "name": Plan.name.expression,
    "code": Plan.code.expression,
}

HIT_SORTS: dict[str, ColumnElement[Any]] = {
    "createdTime": QuotaHit.created_at.expression,
    "hits": QuotaHit.hits.expression,
}


@dataclass(frozen=True, slots=True)
class HitFilter:
    """Narrowing of the quota-hit list; `since` inclusive, `until` exclusive."""

    workspace_id: str | None = None
    quota: str | None = None
    since: datetime | None = None
    until: datetime | None = None


# Counts a quota's use in a workspace; monthly ones count the UTC month of the time given.
UsageCounter = Callable[[AsyncSession, Workspace, datetime], Awaitable[int]]


class PlanNotFoundError(NotFoundError):
    reason = "plan_not_found"
    message = "Plan not found"


async def plan_of(session: AsyncSession, workspace: Workspace) -> Plan:
    plan = await session.get(Plan, workspace.plan_id)
    if plan is None:  # the foreign key makes this unreachable short of a corrupted database
        raise PlanNotFoundError()
    return plan


async def account_plan(session: AsyncSession, account_id: str) -> Plan:
    """The plan that sets an account's own allowances (how many workspaces it may own): the plan of
    its personal workspace, or the default plan if it has none."""
    plan = await session.scalar(
        select(Plan)
        .join(Workspace, Workspace.plan_id == Plan.id)
        .where(Workspace.owner_id == account_id, Workspace.personal.is_(True))
        .limit(1)
    )
    if plan is None:
        plan = await session.scalar(select(Plan).where(Plan.is_default.is_(True)).limit(1))
    if plan is None:
        raise PlanNotFoundError("No default plan is configured", reason="no_default_plan")
    return plan


async def lock_workspace(session: AsyncSession, workspace_id: str) -> None:
    """Serialise quota-checked creations in one workspace until commit, so two requests can't
    both pass the same count: a no-op UPDATE of the workspace row, which locks the row on
    PostgreSQL and takes the database's write lock on SQLite. 404 `workspace_not_found` when
    the row is gone (deleted by a request that held it first): the caller's insert would
    otherwise fail on its foreign key (a 500); once locked, the row stays until commit."""
    if not await lock_rows(session, Workspace, Workspace.id == workspace_id):
        raise NotFoundError("Workspace not found", reason="workspace_not_found")


async def check_quota(
    session: AsyncSession,
    workspace_id: str | None,
    plan: Plan,
    name: str,
    used: int,
    *,
    operation: str,
    adding: int = 1,
    account_id: str | None = None,
    counted: datetime | None = None,
) -> None:
    """`ensure_within_quota`, noting a refusal in the quota-hit log (in memory; the request's own
    transaction rolls back). An account's allowance (`workspaces`) is noted against the account's
    personal workspace: pass `account_id` and no `workspace_id`. `counted`: when a monthly
    quota's `used` was counted (its month is the one that resets)."""
    try:
        ensure_within_quota(plan, name, used, adding, counted)
    except QuotaExceededError as exc:
        if workspace_id is None and account_id is not None:
            workspace_id = await session.scalar(
                select(Workspace.id)
                .where(Workspace.owner_id == account_id, Workspace.personal.is_(True))
                .limit(1)
            )
        if workspace_id is not None:
            quota_meter(session).record_hit(workspace_id, plan.id, exc, operation)
        raise


async def count_members(session: AsyncSession, workspace_id: str) -> int:
    stmt = select(func.count()).where(Membership.workspace_id == workspace_id)
    return int(await session.scalar(stmt) or 0)


async def count_owned_workspaces(session: AsyncSession, account_id: str) -> int:
    stmt = select(func.count()).where(Workspace.owner_id == account_id)
    return int(await session.scalar(stmt) or 0)


async def _members_used(session: AsyncSession, workspace: Workspace, _: datetime) -> int:
    return await count_members(session, workspace.id)


async def _calls_used(session: AsyncSession, workspace: Workspace, now: datetime) -> int:
    return await calls_this_month(session, workspace.id, now)


async def _apps_used(session: AsyncSession, workspace: Workspace, _: datetime) -> int:
    stmt = select(func.count()).select_from(App).where(App.workspace_id == workspace.id)
    return int(await session.scalar(stmt) or 0)


async def _records_used(session: AsyncSession, workspace: Workspace, _: datetime) -> int:
    return (await stock_of(session, workspace.id))[0]


async def _storage_used(session: AsyncSession, workspace: Workspace, _: datetime) -> int:
    return (await stock_of(session, workspace.id))[1]


async def _uploads_used(session: AsyncSession, workspace: Workspace, now: datetime) -> int:
    return await uploads_this_month(session, workspace.id, now)


# What `/user/plans` counts in the workspace (`workspaces`, an account allowance, apart).
USAGE_COUNTERS: dict[str, UsageCounter] = {
    "members": _members_used,
    "apps": _apps_used,
    # Records the workspace holds in its partitions of every app's collections, and their bytes.
    "records": _records_used,
    "storageBytes": _storage_used,
    # Files uploaded this UTC calendar month, deleted ones included (files/usage.py).
    "uploadsPerMonth": _uploads_used,
    # Successful gateway calls this UTC calendar month, from the request log.
    "callsPerMonth": _calls_used,
}


def plan_read(plan: Plan) -> PlanRead:
    return PlanRead(
        id=plan.id,
        code=plan.code,
        name=plan.name,
        description=plan.description,
        quotas=full_quotas(plan),
        is_default=plan.is_default,
        is_public=plan.is_public,
        version=plan.version,
        created_time=plan.created_at,
        updated_time=plan.updated_at,
    )


class PlanService:
    """Plan administration and the plan view of a workspace. Never commits."""

    def __init__(
        self, session: AsyncSession, forget_rates: Callable[[str | None], None] | None = None
    ) -> None:
        self.session = session
        # The traffic stage's cached plan rates on this node (`LimitRules.forget_plans`), given
        # by the router: without it a lowered requestsPerMinute would apply here up to ~2 s late.
        self.forget_rates = forget_rates or (lambda workspace_id: None)

    async def list_plans(self, params: PageParams) -> Page[PlanRead]:
        stmt: Select[tuple[Plan]] = select(Plan)
        stmt = order_by(
            stmt,
            params,
            PLAN_SORTS,
            default="createdTime",
            tiebreak=Plan.id.expression,
            default_order="asc",
        )
        rows, total = await fetch_page(self.session, stmt, params)
        return params.page([plan_read(plan) for plan in rows], total)

    async def get_plan(self, plan_id: str) -> PlanRead:
        return plan_read(await self._plan(plan_id))

    async def create_plan(self, data: PlanCreate) -> Created:
        await self._ensure_code_free(data.code)
        plan = Plan(
            code=data.code,
            name=data.name,
            description=data.description,
            # Names left out start from the documented free-plan baseline, never from "unlimited".
            quotas={**FREE_PLAN_QUOTAS, **data.quotas.given()},
            is_default=False,
            is_public=data.is_public,
        )
        self.session.add(plan)
        await self._flush_code()
        if data.is_default:
            await self._make_default(plan)
        return Created(id=plan.id)

    async def update_plan(
        self, plan_id: str, data: PlanUpdate, precondition: Precondition = NO_PRECONDITION
    ) -> PlanRead:
        plan = await self._plan(plan_id)
        advance(plan, precondition)
        if data.is_default is False and plan.is_default:
            raise ConflictError(
                "Exactly one plan is the default; make another plan the default instead",
                reason="default_plan_required",
            )
        if data.code is not None and data.code != plan.code:
            await self._ensure_code_free(data.code)
            plan.code = data.code
        if data.name is not None:
            plan.name = data.name
        if data.description is not None:
            plan.description = data.description
        if data.quotas is not None:
            # A new dict, so the JSON column sees a change (in-place edits are not tracked).
            plan.quotas = {**full_quotas(plan), **data.quotas.given()}
        if data.is_public is not None:
            plan.is_public = data.is_public
        await self._flush_code()
        if data.is_default and not plan.is_default:
            await self._make_default(plan)
        # Once the change is committed: forgotten before, a concurrent check would read the old
        # limits again and keep them for up to the meter's refresh period.
        after_commit(self.session, quota_meter(self.session).forget)
        after_commit(self.session, lambda: self.forget_rates(None))
        return plan_read(plan)

    async def delete_plan(self, plan_id: str, precondition: Precondition = NO_PRECONDITION) -> None:
        """A plan no workspace uses; `If-Match` is checked (412) and the ORM's DELETE is
        conditional on the version checked."""
        plan = await self._lock_plan(await self._plan(plan_id))
        precondition.check(plan.version)
        if plan.is_default:
            raise ConflictError("The default plan cannot be deleted", reason="default_plan")
        # Counted under the plan's lock: a workspace moved onto the plan meanwhile is seen here
        # (409) rather than failing the DELETE on its foreign key (500).
        in_use = await self.session.scalar(select(func.count()).where(Workspace.plan_id == plan.id))
        if in_use:
            raise ConflictError(
                "Workspaces are on this plan; move them first",
                reason="plan_in_use",
                details={"workspaceCount": int(in_use)},
            )
        await self.session.delete(plan)
        await self.session.flush()

    async def move_workspace(
        self, workspace_id: str, data: WorkspacePlanUpdate
    ) -> WorkspacePlanRead:
        """Put a workspace on another plan. Existing members and resources stay even when they
        exceed the new limits; only further growth is refused."""
        workspace = await self.session.get(Workspace, workspace_id) if is_id(workspace_id) else None
        if workspace is None:
            raise NotFoundError("Workspace not found", reason="workspace_not_found")
        # SQLite's write lock first, then the plan read with a key-share lock (PostgreSQL): a
        # plan deleted at the same time is a 404 here, never a foreign-key failure (500).
        await lock_workspace(self.session, workspace.id)
        plan = await self._plan(data.plan_id, key_share=True)
        advance(workspace, NO_PRECONDITION)  # its planId changes: a new version
        workspace.plan_id = plan.id
        await self.session.flush()
        meter, moved = quota_meter(self.session), workspace.id
        after_commit(self.session, lambda: meter.forget(moved))
        after_commit(self.session, lambda: self.forget_rates(moved))
        return WorkspacePlanRead(id=workspace.id, plan_id=plan.id)

    async def user_plans(self, workspace: Workspace, account_id: str | None = None) -> UserPlans:
        """The workspace's plan, its use of each counted quota, and the plans anyone may pick.

        `workspaces` is an allowance of the account `account_id` (default: the workspace's owner),
        not of the workspace: it shows that account's owned workspaces against the plan of its
        personal workspace, the same count and plan `WorkspaceService.create` enforces, whatever
        plan the workspace shown is on."""
        plan = await plan_of(self.session, workspace)
        account_id = account_id or workspace.owner_id
        # One time for every row: a monthly count and its `resetTime` are of the same month.
        now = utcnow()
        usage = []
        for name in QUOTA_NAMES:
            if name in RATE_QUOTAS:
                continue
            if name == "workspaces":
                used = await count_owned_workspaces(self.session, account_id)
                limit = quota_limit(await account_plan(self.session, account_id), name)
            else:
                counter = USAGE_COUNTERS.get(name)
                used = await counter(self.session, workspace, now) if counter else 0
                limit = quota_limit(plan, name)
            resets = next_month_start(now) if name in MONTHLY_QUOTAS else None
            usage.append(
                QuotaUsage(
                    quota=name,
                    limit=limit,
                    used=used,
                    warning=near_limit(used, limit),
                    reset_time=resets,
                )
            )
        public = await self.session.scalars(
            select(Plan).where(Plan.is_public.is_(True)).order_by(Plan.created_at, Plan.id)
        )
        return UserPlans(
            current_plan=plan_read(plan),
            usage=usage,
            plan_list=[plan_read(p) for p in public],
        )

    async def list_quota_hits(self, filters: HitFilter, params: PageParams) -> Page[QuotaHitRead]:
        """Refusals for reached quotas, newest first (admin). Refusals of the last minute may
        still be in memory (`plans/hits.py`)."""
        stmt: Select[tuple[QuotaHit]] = select(QuotaHit)
        if filters.workspace_id is not None:
            stmt = stmt.where(QuotaHit.workspace_id == filters.workspace_id)
        if filters.quota is not None:
            stmt = stmt.where(QuotaHit.quota == filters.quota)
        if filters.since is not None:
            stmt = stmt.where(QuotaHit.created_at >= filters.since)
        if filters.until is not None:
            stmt = stmt.where(QuotaHit.created_at < filters.until)
        stmt = order_by(
            stmt, params, HIT_SORTS, default="createdTime", tiebreak=QuotaHit.id.expression
        )
        rows, total = await fetch_page(self.session, stmt, params)
        return params.page([_hit_read(row) for row in rows], total)

    async def _plan(self, plan_id: str, *, key_share: bool = False) -> Plan:
        """The plan (404 otherwise); with `key_share`, read again under PostgreSQL's FOR KEY
        SHARE, so it can't be deleted before this transaction ends."""
        if not is_id(plan_id):
            raise PlanNotFoundError()
        if key_share:
            stmt = (
                select(Plan)
                .where(Plan.id == plan_id)
                .with_for_update(read=True, key_share=True)
                .execution_options(populate_existing=True)
            )
            plan = await self.session.scalar(stmt)
        else:
            plan = await self.session.get(Plan, plan_id)
        if plan is None:
            raise PlanNotFoundError()
        return plan

    async def _lock_plan(self, plan: Plan) -> Plan:
        """Lock the plan's row until commit and read it again (404 if it went meanwhile): a no-op
        UPDATE takes SQLite's write lock, FOR UPDATE waits out PostgreSQL transactions that
        key-share it (a workspace being moved onto it)."""
        await lock_rows(self.session, Plan, Plan.id == plan.id)
        locked = await self.session.scalar(
            select(Plan)
            .where(Plan.id == plan.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if locked is None:
            raise PlanNotFoundError()
        return locked

    async def _ensure_code_free(self, code: str) -> None:
        if await self.session.scalar(select(Plan.id).where(Plan.code == code)):
            raise _code_taken()

    async def _flush_code(self) -> None:
        """Flush a plan whose code `_ensure_code_free` checked: a concurrent request may have
        taken the code since, which the unique index refuses (409, not a 500)."""
        try:
            await self.session.flush()
        except IntegrityError:
            raise _code_taken() from None

    async def _make_default(self, plan: Plan) -> None:
        """Move the default flag to `plan`. Locking the current default first serialises two
        concurrent moves on PostgreSQL, so the later one sees (and clears) the earlier winner.
        Both plans' `isDefault` changes, so both take a new version (their ETags change): the
        old default's in the clearing UPDATE, `plan`'s through the ORM, whose UPDATE stays
        conditional on the version `If-Match` checked (409 `concurrent_update`)."""
        await self.session.execute(
            select(Plan.id).where(Plan.is_default.is_(True)).with_for_update()
        )
        await self.session.execute(
            update(Plan)
            .where(Plan.is_default.is_(True), Plan.id != plan.id)
            .values(is_default=False, version=Plan.version + 1)
            .execution_options(synchronize_session=False)
        )
        plan.is_default = True
        await self.session.flush()


def _code_taken() -> ConflictError:
    return ConflictError("Plan code is already used", reason="plan_code_taken")


def _hit_read(row: QuotaHit) -> QuotaHitRead:
    return QuotaHitRead(
        id=row.id,
        created_time=row.created_at,
        last_time=row.last_at,
        workspace_id=row.workspace_id,
        plan_id=row.plan_id,
        quota=row.quota,
        operation=row.operation,
        limit=row.quota_limit,
        used=row.used,
        hits=row.hits,
    )
