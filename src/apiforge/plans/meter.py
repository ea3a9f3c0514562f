"""Plan quotas checked where they are cheap to check: the gateway and record writes.

Counting what a workspace used with a query per call would put a database round trip on every
gateway call and every record insert. Instead each process keeps, per workspace:

- the plan's limits, loaded once and then refreshed in the background every `PLAN_TTL` seconds
  (plan changes made on this node apply at once: `forget`);
- a snapshot of its usage (successful calls this UTC month from the request log; records and
  stored bytes from the records index), refreshed in the background every `USAGE_TTL` seconds
  (`APIFORGE_QUOTA_REFRESH_SECONDS`), plus what this process added since the snapshot (calls
  that succeeded, records it wrote and committed);
- what is in flight: gateway calls admitted and still running, and record writes reserved whose
  transactions have not ended. These count until they end, whatever snapshot is read meanwhile
  (a write's transaction is not in it until it commits), so within one process neither quota
  kind is overshot; a write that rolls back frees its room at once.

A check is dict lookups and an addition; only a workspace's first check in a process, or its
first after an idle spell (an entry older than twice its refresh period), reads the database, on
the caller's own connection so it can't wait for a second pool connection; a quota set to `-1`
(unlimited) skips the usage entirely. The price is a soft bound across nodes: a quota may be
overshot by what other processes did since this one's snapshot (under two refresh periods of
their traffic) and by calls still in the request-log buffer (under a second).
Deletions free space at the next snapshot.

One meter per database engine (`quota_meter(bind)`), so the gateway, the step engine and the
management API share it without it being passed through every service.
"""

import asyncio
import contextlib
import copy
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any, NoReturn, TypeVar

import structlog
from sqlalchemy import Engine, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from apiforge.core.db import TransactionEnd
from apiforge.core.lazydb import LazyConnection
from apiforge.datasets.models import Record
from apiforge.plans.hits import QuotaHitLog
from apiforge.plans.models import Plan
from apiforge.plans.quotas import UNLIMITED, QuotaExceededError, full_quotas, resets_at
from apiforge.tools.clock import utcnow
from apiforge.usage.counters import calls_this_month, month_start, next_month_start
from apiforge.workspaces.models import Workspace

log = structlog.get_logger(__name__)

PLAN_TTL = 5.0
USAGE_TTL = 10.0
MAX_WORKSPACES = 100_000  # cached workspaces per process; beyond, the caches start afresh
_NONE = (0, 0)  # records and bytes of a workspace with no write in flight

Bind = AsyncEngine | AsyncConnection | AsyncSession
T = TypeVar("T")


@dataclass(slots=True)
class PlanLimits:
    plan_id: str
    quotas: dict[str, int]
    loaded: float  # time.monotonic() when read from the database


@dataclass(slots=True)
class CallCount:
    """Successful calls this month: `base` from the request log at the snapshot, `local` since."""

    month: datetime
    base: int
    local: int
    loaded: float  # time.monotonic() when read from the database


@dataclass(slots=True)
class Stock:
    """Records and their stored bytes: `records`/`size` at the snapshot, `added_*` since."""

    records: int
    size: int
    added_records: int
    added_size: int
    loaded: float  # time.monotonic() when read from the database


class QuotaMeter:
    """In-process quota state of one database; see the module docstring for the trade-offs."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = weakref.ref(engine)
        self.plan_ttl = PLAN_TTL
        self.usage_ttl = USAGE_TTL  # APIFORGE_QUOTA_REFRESH_SECONDS, set by the gateway stage
        self.hits = QuotaHitLog(self._engine)
        self._plans: dict[str, PlanLimits] = {}
        self._calls: dict[str, CallCount] = {}
        self._stock: dict[str, Stock] = {}
        # Gateway calls admitted by `check_call` and not yet ended, per workspace and the month
        # they were admitted in: they count as used in that month, so calls running at once
        # can't overshoot the quota (nor leave it unmet), and calls still running when a month
        # ends take nothing of the next one.
        self._running: dict[tuple[str, datetime], int] = {}
        # Records and bytes reserved by writes whose transactions have not ended, per workspace:
        # no snapshot holds them yet (nor ever will, if they roll back). They count until then;
        # a commit moves them into the workspace's `Stock.added_*` (`_stock_ended`).
        self._writing: dict[str, tuple[int, int]] = {}
        self._refreshing: set[tuple[str, str]] = set()
        self._plan_epoch = 0  # bumped by `forget`: plan reads begun before it are not kept
        self._tasks: set[asyncio.Task[None]] = set()
        self._month_start = month_start(utcnow())
        self._month_ends = 0.0  # epoch seconds when `_month_start` must be recomputed

    # --- checks ---------------------------------------------------------------------------------

    async def check_call(self, connection: AsyncConnection, workspace_id: str) -> datetime | None:
        """403 `quota_exceeded` when the workspace used up its `callsPerMonth` (gateway), counting
        its calls still running as used. An allowed call takes a place among those until
        `end_call`: answers the UTC month it holds a place in, None when the plan has no such
        limit."""
        plan = await self.limits(connection, workspace_id)
        if plan is None:
            return None
        limit = plan.quotas["callsPerMonth"]
        if limit == UNLIMITED:
            return None
        entry = await self._calls_of(connection, workspace_id)
        used, key = entry.base + entry.local, (workspace_id, entry.month)
        # Read after the awaits above, and taken with no await in between: check and hold are one.
        running = self._running.get(key, 0)
        if used + running >= limit:
            # Until the month counted ends (`_month` keeps it consistent with the count).
            resets = resets_at("callsPerMonth", limit, 1, entry.month)
            self._refuse(
                workspace_id, plan, "callsPerMonth", "invocations", limit, used + running, resets
            )
        self._running[key] = running + 1
        return entry.month

    def end_call(self, workspace_id: str, succeeded: bool, month: datetime | None = None) -> None:
        """A call holding a place in `month` (what `check_call` answered; default this month)
        ended: it counts only if it succeeded, and only in its own month (its request-log row is
        dated when it began), never in the next one it ran into."""
        month = month or self._month()
        key = (workspace_id, month)
        running = self._running.get(key, 0) - 1
        if running > 0:
            self._running[key] = running
        else:
            self._running.pop(key, None)
        entry = self._calls.get(workspace_id)
        if succeeded and entry is not None and entry.month == month:
            entry.local += 1

    def count_call(self, workspace_id: str) -> None:
        """A call of the workspace succeeded (no-op unless its monthly count is being kept)."""
        entry = self._calls.get(workspace_id)
        if entry is not None:
            entry.local += 1

    async def reserve_stock(
        self,
        connection: AsyncConnection,
        workspace_id: str,
        *,
        records: int,
        size: int,
        operation: str,
        ends: TransactionEnd | None = None,
    ) -> None:
        """Check that `records` more records and `size` more bytes fit the workspace's plan and
        count them as used; 403 `quota_exceeded` naming `records` or `storageBytes` otherwise.
        Called before the write, in the write's transaction, which `ends` reports the end of:
        until then the write counts as in flight (a negative `size`, a record that shrinks,
        frees its bytes only once committed), then as committed or as nothing. Without `ends`
        it counts as committed at once: a snapshot read before it commits could then miss it."""
        plan = await self.limits(connection, workspace_id)
        if plan is None:
            return
        max_records, max_size = plan.quotas["records"], plan.quotas["storageBytes"]
        if max_records == UNLIMITED and max_size == UNLIMITED:
            return
        stock = await self._stock_of(connection, workspace_id)
        # Read after the awaits above, and taken with no await in between: check and hold are one.
        writing_records, writing_size = self._writing.get(workspace_id, _NONE)
        used_records = stock.records + stock.added_records + writing_records
        used_size = stock.size + stock.added_size + writing_size
        if records > 0 and max_records != UNLIMITED and used_records + records > max_records:
            self._refuse(workspace_id, plan, "records", operation, max_records, used_records)
        if size > 0 and max_size != UNLIMITED and used_size + size > max_size:
            self._refuse(workspace_id, plan, "storageBytes", operation, max_size, used_size)
        if ends is None:
            stock.added_records += records
            stock.added_size += size
            return
        self._writing[workspace_id] = (writing_records + records, writing_size + max(size, 0))
        ends.on_end(partial(self._stock_ended, workspace_id, records, size))

    def _stock_ended(self, workspace_id: str, records: int, size: int, committed: bool) -> None:
        """A reserved write's transaction ended: committed, it counts as added since the
        snapshot (one read from now on holds it: `_carry` keeps it in a read begun before);
        rolled back, as nothing."""
        writing_records, writing_size = self._writing.get(workspace_id, _NONE)
        writing_records -= records
        writing_size -= max(size, 0)
        if writing_records > 0 or writing_size > 0:
            self._writing[workspace_id] = (writing_records, writing_size)
        else:
            self._writing.pop(workspace_id, None)
        stock = self._stock.get(workspace_id)
        if committed and stock is not None:
            stock.added_records += records
            stock.added_size += size

    def record_hit(self, workspace_id: str, plan_id: str, exc: QuotaExceededError, op: str) -> None:
        """Note a refusal decided elsewhere (the management API's counted quotas)."""
        details = exc.details
        self.hits.record(
            workspace_id=workspace_id,
            plan_id=plan_id,
            quota=str(details["quota"]),
            operation=op,
            limit=int(details["limit"]),
            used=int(details["used"]),
        )

    def forget(self, workspace_id: str | None = None) -> None:
        """Drop cached plan limits (all of them without a workspace): a plan was changed or a
        workspace moved on this node, which then applies at once; other nodes within PLAN_TTL.
        Call it once the change is committed; plan reads still in flight are not kept."""
        self._plan_epoch += 1
        if workspace_id is None:
            self._plans.clear()
        else:
            self._plans.pop(workspace_id, None)

    async def close(self) -> None:
        """Write the refusals still in memory and stop background refreshes (app shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.hits.close()

    # --- cached state ---------------------------------------------------------------------------

    async def limits(self, connection: AsyncConnection, workspace_id: str) -> PlanLimits | None:
        """The workspace's plan limits (None for an unknown workspace): cached, refreshed in the
        background once stale, re-read inline when much older (the workspace was idle here)."""
        entry = self._plans.get(workspace_id)
        age = _age(entry)
        if entry is None or age >= 2 * self.plan_ttl:
            epoch = self._plan_epoch
            loaded = await _load_plan(connection, workspace_id)
            if epoch != self._plan_epoch:  # forgotten meanwhile: the read may predate the change
                return loaded
            if loaded is None:
                self._plans.pop(workspace_id, None)
                return None
            entry = self._settle(self._plans, workspace_id, entry, loaded)
        elif age >= self.plan_ttl:
            self._refresh("plan", workspace_id, _load_plan, self._plans)
        return entry

    async def _calls_of(self, connection: AsyncConnection, workspace_id: str) -> CallCount:
        """The workspace's count of this month's successful calls (`base + local`)."""
        month = self._month()
        entry = self._calls.get(workspace_id)
        age = _age(entry)
        if entry is None or entry.month != month or age >= 2 * self.usage_ttl:
            entry = self._settle(
                self._calls, workspace_id, entry, await _load_calls(connection, workspace_id)
            )
        elif age >= self.usage_ttl:
            self._refresh("calls", workspace_id, _load_calls, self._calls)
        return entry

    async def _stock_of(self, connection: AsyncConnection, workspace_id: str) -> Stock:
        entry = self._stock.get(workspace_id)
        age = _age(entry)
        if entry is None or age >= 2 * self.usage_ttl:
            before = copy.copy(entry)
            loaded = await _load_stock(connection, workspace_id)
            # Writes committed while it was read may be missing from it: keep them, as a
            # background refresh does.
            _carry(loaded, before, entry)
            entry = self._settle(self._stock, workspace_id, entry, loaded)
        elif age >= self.usage_ttl:
            self._refresh("stock", workspace_id, _load_stock, self._stock)
        return entry

    def _month(self) -> datetime:
        """The current UTC month's start, recomputed only when a month ends (cheaper per call)."""
        if time.time() >= self._month_ends:
            start = month_start(utcnow())
            self._month_start = start
            self._month_ends = next_month_start(start).timestamp()
        return self._month_start

    def _settle(self, cache: dict[str, T], workspace_id: str, seen: T | None, loaded: T) -> T:
        """Store an entry read inline, unless a concurrent check replaced the one this check saw
        while it was reading (that one may already count writes: keep it)."""
        current = cache.get(workspace_id)
        if current is not None and current is not seen:
            return current
        self._put(cache, workspace_id, loaded)
        return loaded

    def _refresh(
        self,
        kind: str,
        workspace_id: str,
        loader: Callable[[AsyncConnection, str], Awaitable[T | None]],
        cache: dict[str, T],
    ) -> None:
        """Reload one entry on a connection of its own, off the caller's path; at most one reload
        per entry in flight. Until it lands the stale entry keeps answering."""
        key = (kind, workspace_id)
        engine = self._engine()
        if key in self._refreshing or engine is None:
            return
        self._refreshing.add(key)
        before = copy.copy(cache.get(workspace_id))
        epoch = self._plan_epoch

        async def reload() -> None:
            try:
                async with engine.connect() as connection:
                    fresh = await loader(connection, workspace_id)
                if cache is self._plans and epoch != self._plan_epoch:
                    return  # forgotten meanwhile: the next check reads the plan again
                if fresh is None:
                    cache.pop(workspace_id, None)
                else:
                    _carry(fresh, before, cache.get(workspace_id))
                    self._put(cache, workspace_id, fresh)
            except Exception:  # a failed refresh keeps the stale entry; the next check retries
                log.warning("quota_refresh_failed", kind=kind, workspace=workspace_id)
            finally:
                self._refreshing.discard(key)

        task = asyncio.get_running_loop().create_task(reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _put(cache: dict[str, Any], workspace_id: str, entry: Any) -> None:
        if len(cache) >= MAX_WORKSPACES and workspace_id not in cache:
            cache.clear()
        cache[workspace_id] = entry

    async def refuse_closed(
        self, connection: AsyncConnection, workspace_id: str, quota: str
    ) -> NoReturn:
        """403 for a gateway call the plan allows none of (`quota` is 0: the traffic stage finds
        it), noted like every quota refusal."""
        plan = await self.limits(connection, workspace_id)
        if plan is None:
            raise QuotaExceededError(quota, 0, 0)
        self._refuse(workspace_id, plan, quota, "invocations", plan.quotas.get(quota, 0), 0)

    def _refuse(
        self,
        workspace_id: str,
        plan: PlanLimits,
        quota: str,
        operation: str,
        limit: int,
        used: int,
        resets: datetime | None = None,
    ) -> NoReturn:
        self.hits.record(
            workspace_id=workspace_id,
            plan_id=plan.plan_id,
            quota=quota,
            operation=operation,
            limit=limit,
            used=used,
        )
        raise QuotaExceededError(quota, limit, used, resets=resets, now=utcnow())


def _age(entry: PlanLimits | CallCount | Stock | None) -> float:
    return 0.0 if entry is None else time.monotonic() - entry.loaded


def _carry(fresh: Any, before: Any, current: Any) -> None:
    """Keep in a fresh snapshot what this process added while it was being read (the additions
    counted in `current` since `before`, when the reload started), so none is lost; those the
    snapshot already saw are counted twice until the next one (an overestimate, never an
    overshoot)."""
    if isinstance(fresh, CallCount) and isinstance(before, CallCount):
        if isinstance(current, CallCount) and current.month == fresh.month == before.month:
            fresh.local = max(0, current.local - before.local)
    elif isinstance(fresh, Stock) and isinstance(before, Stock) and isinstance(current, Stock):
        fresh.added_records = current.added_records - before.added_records
        fresh.added_size = current.added_size - before.added_size


async def _load_plan(connection: AsyncConnection, workspace_id: str) -> PlanLimits | None:
    row = (
        await connection.execute(
            select(Plan)
            .join(Workspace, Workspace.plan_id == Plan.id)
            .where(Workspace.id == workspace_id)
        )
    ).first()
    if row is None:
        return None
    plan = Plan(id=row.id, quotas=row.quotas)
    return PlanLimits(plan.id, full_quotas(plan), time.monotonic())


async def _load_calls(connection: AsyncConnection, workspace_id: str) -> CallCount:
    now = utcnow()
    used = await calls_this_month(connection, workspace_id, now)
    return CallCount(month_start(now), used, 0, time.monotonic())


async def _load_stock(connection: AsyncConnection, workspace_id: str) -> Stock:
    records, size = await stock_of(connection, workspace_id)
    return Stock(records, size, 0, 0, time.monotonic())


async def stock_of(bind: AsyncConnection | AsyncSession, workspace_id: str) -> tuple[int, int]:
    """Records in the workspace's partition over every collection, and their stored bytes."""
    stmt = select(func.count(), func.coalesce(func.sum(Record.size), 0)).where(
        Record.partition == workspace_id
    )
    row = (await bind.execute(stmt)).one()
    return int(row[0]), int(row[1])


_METERS: "weakref.WeakKeyDictionary[Engine, QuotaMeter]" = weakref.WeakKeyDictionary()


def quota_meter(bind: Bind) -> QuotaMeter:
    """The meter of the database `bind` talks to (made on first use)."""
    if isinstance(bind, AsyncSession):
        engine = bind.bind
        if not isinstance(engine, AsyncEngine):
            raise TypeError("the session must be bound to an AsyncEngine")
    elif isinstance(bind, AsyncConnection):
        engine = bind.engine
    else:
        engine = bind
    meter = _METERS.get(engine.sync_engine)
    if meter is None:
        meter = _METERS[engine.sync_engine] = QuotaMeter(engine)
    return meter


async def reserve_stock(
    connection: AsyncConnection,
    workspace_id: str,
    *,
    records: int,
    size: int,
    ends: TransactionEnd | None = None,
) -> None:
    """Count a record write against its workspace's `records` and `storageBytes` quotas (the
    hook record stores call before writing; a few dict lookups, see `QuotaMeter.reserve_stock`).
    `ends` reports the end of the write's transaction; a gateway call's or workflow's connection
    reports its own."""
    operation = "records.insert" if records else "records.update"
    if ends is None and isinstance(connection, LazyConnection):
        ends = connection
    await quota_meter(connection).reserve_stock(
        connection, workspace_id, records=records, size=size, operation=operation, ends=ends
    )


async def close_quota_meter(engine: AsyncEngine) -> None:
    """Write pending quota hits and stop refreshes: call on shutdown, before the engine closes."""
    meter = _METERS.pop(engine.sync_engine, None)
    if meter is not None:
        await meter.close()
