"""Reading request logs: a workspace's own calls and the calls to its apps, as lists and charts.

Tenancy is the first condition of every query: a caller's list is `workspace_id = current`, a
builder's list is `app_workspace_id = current`; both match an index that starts with that column
and continues with `created_at`, the default order and the time-range filter.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from apiforge.builder.models import App
from apiforge.http.pagination import Page, PageParams, fetch_page, order_by
from apiforge.keys.models import Subscription
from apiforge.usage.charts import (
    ChartQuery,
    PieChart,
    TimeSeriesChart,
    bucket_label_sql,
    pie,
    time_series,
)
from apiforge.usage.models import RequestLog
from apiforge.usage.schemas import AppCallRead, RequestLogRead
from apiforge.workspaces.service import CurrentWorkspace

LOG_SORTS: dict[str, ColumnElement[Any]] = {
    "createdTime": RequestLog.created_at.expression,
    "latencyMs": RequestLog.latency_ms.expression,
    "status": RequestLog.status.expression,
}


@dataclass(frozen=True, slots=True)
class LogFilter:
    """Optional narrowing of a log list; `since` inclusive, `until` exclusive."""

    app_id: str | None = None
    api: str | None = None
    status: int | None = None
    request_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class RequestLogService:
    """Request-log lists for the current workspace. Never commits (it only reads)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def own_calls(
        self, current: CurrentWorkspace, filters: LogFilter, params: PageParams
    ) -> Page[RequestLogRead]:
        """Calls the current workspace made (any member may read them), args included."""
        stmt = _filtered(select(RequestLog).where(RequestLog.workspace_id == current.id), filters)
        rows, total = await self._page(stmt, params)
        return params.page([_own(row) for row in rows], total)

    async def app_calls(
        self, current: CurrentWorkspace, filters: LogFilter, params: PageParams
    ) -> Page[AppCallRead]:
        """Calls anyone made to the current workspace's apps, without the callers' args, client
        IPs or key ids: those belong to the calling workspace."""
        stmt = _filtered(
            select(RequestLog).where(RequestLog.app_workspace_id == current.id), filters
        )
        rows, total = await self._page(stmt, params)
        return params.page([_app_call(row) for row in rows], total)

    async def _page(self, stmt: Select[Any], params: PageParams) -> tuple[list[Any], int]:
        stmt = order_by(
            stmt, params, LOG_SORTS, default="createdTime", tiebreak=RequestLog.id.expression
        )
        return await fetch_page(self.session, stmt, params)


def _filtered(stmt: Select[Any], filters: LogFilter) -> Select[Any]:
    if filters.app_id is not None:
        stmt = stmt.where(RequestLog.app_id == filters.app_id)
    if filters.api is not None:
        stmt = stmt.where(RequestLog.api == filters.api)
    if filters.status is not None:
        stmt = stmt.where(RequestLog.status == filters.status)
    if filters.request_id is not None:
        # Within the tenancy condition's index range: no index of its own for every call's
        # insert to pay (a client may reuse its ids, so this is a list, not a lookup).
        stmt = stmt.where(RequestLog.request_id == filters.request_id)
    if filters.since is not None:
        stmt = stmt.where(RequestLog.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(RequestLog.created_at < filters.until)
    return stmt


def _own(row: RequestLog) -> RequestLogRead:
    return RequestLogRead(
        id=row.id,
        created_time=row.created_at,
        request_id=row.request_id,
        app_id=row.app_id,
        api=row.api,
        version=row.version,
        status=row.status,
        reason=row.reason,
        latency_ms=row.latency_ms,
        amount=row.amount,
        caller_kind=row.caller_kind,
        key_id=row.key_id,
        account_id=row.account_id,
        client_ip=row.client_ip,
        args=row.args,
    )


def _app_call(row: RequestLog) -> AppCallRead:
    return AppCallRead(
        id=row.id,
        created_time=row.created_at,
        request_id=row.request_id,
        caller_workspace_id=row.workspace_id,
        app_id=row.app_id,
        api=row.api,
        version=row.version,
        status=row.status,
        reason=row.reason,
        latency_ms=row.latency_ms,
        amount=row.amount,
    )


Scope = Literal["caller", "builder"]
Outcome = Literal["all", "success", "failure"]


class CallChartService:
    """`/usage/calls`: gateway calls counted per bucket and per app or API, grouped by the
    database (one aggregate query over the same indexes as the log lists). Never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def calls(
        self,
        current: CurrentWorkspace,
        query: ChartQuery,
        *,
        scope: Scope = "caller",
        app_id: str | None = None,
        outcome: Outcome = "all",
    ) -> TimeSeriesChart | PieChart:
        """Calls the current workspace made (`caller`), or anyone made to its apps (`builder`),
        in `[from, to)`: a zero-filled line chart, or a pie of shares."""
        owner = RequestLog.workspace_id if scope == "caller" else RequestLog.app_workspace_id
        chart_range = query.range
        conditions = [
            owner == current.id,
            RequestLog.created_at >= chart_range.start,
            RequestLog.created_at < chart_range.end,
        ]
        if app_id is not None:
            conditions.append(RequestLog.app_id == app_id)
        success = and_(RequestLog.status >= 200, RequestLog.status < 300)
        if outcome == "success":
            conditions.append(success)
        elif outcome == "failure":
            conditions.append(~success)
        keys: list[ColumnElement[Any]] = [RequestLog.app_id.expression]
        if query.group_by == "api":
            keys.append(RequestLog.api.expression)
        calls = func.count()
        if query.chart == "pie":
            stmt = select(*keys, calls).where(*conditions).group_by(*keys)
            rows = (await self.session.execute(stmt)).all()
            names = await self._names(current, {tuple(row[:-1]) for row in rows})
            return pie([(_series_id(row[:-1]), int(row[-1])) for row in rows], names, query.top)
        dialect = self.session.get_bind().dialect.name
        bucket = bucket_label_sql(
            RequestLog.created_at.expression, chart_range.granularity, dialect
        )
        stmt = select(bucket, *keys, calls).where(*conditions).group_by(bucket, *keys)
        rows = (await self.session.execute(stmt)).all()
        names = await self._names(current, {tuple(row[1:-1]) for row in rows})
        series = [(str(row[0]), _series_id(row[1:-1]), int(row[-1])) for row in rows]
        return time_series(series, chart_range, names, query.top)

    async def _names(self, current: CurrentWorkspace, keys: set[tuple[Any, ...]]) -> dict[str, str]:
        """Display names of the series (`app name` or `app name/api`). An app is named only when
        the current workspace may see it (its own, public, or enabled by a subscription), so a
        caller who sent a guessed id never learns a private app's name; others keep their id."""
        app_ids = sorted({str(key[0]) for key in keys})
        if not app_ids:
            return {}
        visible = or_(
            App.workspace_id == current.id,
            App.visibility == "public",
            Subscription.id.is_not(None),
        )
        stmt = (
            select(App.id, App.name)
            .outerjoin(
                Subscription,
                and_(Subscription.app_id == App.id, Subscription.workspace_id == current.id),
            )
            .where(App.id.in_(app_ids), visible)
        )
        apps = {row[0]: row[1] for row in await self.session.execute(stmt)}
        names = {}
        for key in keys:
            app_name = apps.get(str(key[0]), str(key[0]))
            names[_series_id(key)] = "/".join([app_name, *(str(part) for part in key[1:])])
        return names


def _series_id(key: Any) -> str:
    """`appId` for per-app series, `appId/api` for per-API ones."""
    return "/".join(str(part) for part in key)
