"""Reading request logs: a workspace's own calls and the calls to its apps.

Tenancy is the first condition of every query: a caller's list is `workspace_id = current`, a
builder's list is `app_workspace_id = current`; both match an index that starts with that column
and continues with `created_at`, the default order and the time-range filter.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from apiforge.http.pagination import Page, PageParams, fetch_page, order_by
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
    )
