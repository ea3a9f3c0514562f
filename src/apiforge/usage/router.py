"""`/api/v1/request-logs`: the current workspace's gateway calls, or (`scope=builder`) the calls
anyone made to its apps; `/api/v1/usage/calls`: the same calls counted per hour or day, per app or
API, in spec 003's chart formats. Any member of the workspace (`X-Workspace-Id`) may read them."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from apiforge.core.errors import ValidationError
from apiforge.http.deps import RequestIdFilter, SessionDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep
from apiforge.http.schemas import NUL_MESSAGE, Text
from apiforge.http.timerange import From, To, time_range
from apiforge.usage.charts import ChartQueryDep, PieChart, TimeSeriesChart
from apiforge.usage.schemas import AppCallRead, RequestLogRead
from apiforge.usage.service import CallChartService, LogFilter, Outcome, RequestLogService
from apiforge.workspaces.deps import CurrentWorkspaceDep

router = APIRouter(prefix="/api/v1", tags=["usage"])


def _service(session: SessionDep) -> RequestLogService:
    return RequestLogService(session)


def _filters(
    app_id: Annotated[str | None, Query(alias="appId", max_length=26)] = None,
    api: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[int | None, Query(ge=100, le=599, description="HTTP status")] = None,
    request_id: RequestIdFilter = None,
    since: From = None,
    until: To = None,
) -> LogFilter:
    # Checked here rather than as `Text`, so a NUL is reported with the time range's problems.
    errors = [
        {"field": field, "message": NUL_MESSAGE}
        for field, value in (("appId", app_id), ("api", api))
        if value and "\x00" in value
    ]
    start, end = time_range(since, until, errors)
    if errors:
        raise ValidationError(errors=errors)
    return LogFilter(
        app_id=app_id or None,
        api=api or None,
        status=status,
        request_id=request_id or None,
        since=start,
        until=end,
    )


RequestLogServiceDep = Annotated[RequestLogService, Depends(_service)]
LogFilterDep = Annotated[LogFilter, Depends(_filters)]
Scope = Literal["caller", "builder"]


@router.get(
    "/request-logs",
    summary="Gateway calls of the workspace (args masked), or with scope=builder the calls to "
    "its apps (without callers' args and IPs); newest first",
)
async def list_request_logs(
    current: CurrentWorkspaceDep,
    service: RequestLogServiceDep,
    filters: LogFilterDep,
    page: PageDep,
    scope: Annotated[
        Scope, Query(description="caller: calls this workspace made; builder: calls to its apps")
    ] = "caller",
) -> Envelope[Page[RequestLogRead]] | Envelope[Page[AppCallRead]]:
    if scope == "builder":
        return ok(await service.app_calls(current, filters, page))
    return ok(await service.own_calls(current, filters, page))


def _chart_service(session: SessionDep) -> CallChartService:
    return CallChartService(session)


@router.get(
    "/usage/calls",
    summary="Gateway calls per hour or day and per app or API (zero-filled xAxis/series), or "
    "their shares (chart=pie); the workspace's own calls, or with scope=builder calls to its apps",
)
async def usage_calls(
    current: CurrentWorkspaceDep,
    service: Annotated[CallChartService, Depends(_chart_service)],
    query: ChartQueryDep,
    scope: Annotated[
        Scope, Query(description="caller: calls this workspace made; builder: calls to its apps")
    ] = "caller",
    app_id: Annotated[
        Text | None, Query(alias="appId", max_length=26, description="Only this app's calls")
    ] = None,
    outcome: Annotated[
        Outcome, Query(description="all calls, only successful (2xx) ones, or only refused/failed")
    ] = "all",
) -> Envelope[TimeSeriesChart | PieChart]:
    chart = await service.calls(current, query, scope=scope, app_id=app_id or None, outcome=outcome)
    return ok(chart)
