"""Request-log lists and monthly counts: tenancy first, then filters, order and pages."""

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi import FastAPI

from apiforge.core.db import unit_of_work
from apiforge.core.errors import ValidationError
from apiforge.http.pagination import PageParams
from apiforge.tools.ids import new_id
from apiforge.usage.buffer import RequestLogBuffer
from apiforge.usage.counters import calls_this_month, month_start
from apiforge.usage.service import LogFilter, RequestLogService
from apiforge.workspaces.models import Role, Workspace
from apiforge.workspaces.service import CurrentWorkspace
from tests.unit.usage._rows import log_row

CALLER, OTHER, BUILDER = new_id(), new_id(), new_id()
APP = new_id()
NOW = datetime.now(UTC)


def _current(workspace_id: str) -> CurrentWorkspace:
    return CurrentWorkspace(
        workspace=Workspace(id=workspace_id), account_id=new_id(), role=Role.VIEWER
    )


def _page(
    size: int = 20, number: int = 1, sort: str | None = None, order: str | None = None
) -> PageParams:
    return PageParams(page_no=number, page_size=size, sort=sort, order=order)


async def _write(app: FastAPI, *rows: dict[str, Any]) -> None:
    buffer = RequestLogBuffer(app.state.engine, interval=3600)
    await buffer.close()
    for row in rows:
        buffer.append(row)
    assert await buffer.flush() == len(rows)


async def _own(app: FastAPI, workspace_id: str, filters: LogFilter, page: PageParams) -> Any:
    async with unit_of_work(app.state.sessionmaker) as session:
        return await RequestLogService(session).own_calls(_current(workspace_id), filters, page)


async def _app_calls(app: FastAPI, workspace_id: str, filters: LogFilter, page: PageParams) -> Any:
    async with unit_of_work(app.state.sessionmaker) as session:
        return await RequestLogService(session).app_calls(_current(workspace_id), filters, page)


@pytest.fixture
async def logged(app: FastAPI) -> dict[str, dict[str, Any]]:
    """Calls by CALLER and OTHER to BUILDER's app, one of them refused before any workspace
    was known, at known times."""
    rows = {
        "old": log_row(
            workspace_id=CALLER,
            app_workspace_id=BUILDER,
            app_id=APP,
            api="listPosts",
            created_at=NOW - timedelta(hours=3),
            latency_ms=9.0,
        ),
        "mid": log_row(
            workspace_id=CALLER,
            app_workspace_id=BUILDER,
            app_id=APP,
            api="getPost",
            status=403,
            reason="app_not_enabled",
            created_at=NOW - timedelta(hours=2),
            latency_ms=1.0,
            key_id=new_id(),
            args={"password": "***", "id": 7},
        ),
        "new": log_row(
            workspace_id=CALLER,
            app_workspace_id=None,
            app_id="unknown",
            api="getPost",
            status=404,
            reason="app_not_found",
            created_at=NOW - timedelta(hours=1),
            latency_ms=5.0,
            args=None,
        ),
        "other": log_row(
            workspace_id=OTHER,
            app_workspace_id=BUILDER,
            app_id=APP,
            api="getPost",
            created_at=NOW - timedelta(minutes=30),
            client_ip="10.1.2.3",
        ),
        "anonymous": log_row(
            workspace_id=None,
            app_workspace_id=None,
            app_id=APP,
            status=401,
            reason="authentication_required",
            created_at=NOW - timedelta(minutes=10),
            args=None,
        ),
    }
    await _write(app, *rows.values())
    return rows


async def test_a_workspace_lists_only_its_own_calls_newest_first(
    app: FastAPI, logged: dict[str, dict[str, Any]]
) -> None:
    page = await _own(app, CALLER, LogFilter(), _page())
    assert [item.request_id for item in page.list] == [
        logged[name]["request_id"] for name in ("new", "mid", "old")
    ]
    assert page.total_count == 3
    mid = page.list[1]
    assert (mid.status, mid.reason, mid.args) == (
        403,
        "app_not_enabled",
        {"password": "***", "id": 7},
    )
    assert mid.key_id == logged["mid"]["key_id"]
    assert page.list[0].args is None
    other = await _own(app, OTHER, LogFilter(), _page())
    assert [item.client_ip for item in other.list] == ["10.1.2.3"]
    # Nobody sees calls refused before a workspace was known, builders included.
    assert (await _own(app, BUILDER, LogFilter(), _page())).total_count == 0


async def test_a_builder_lists_calls_to_its_apps_without_callers_details(
    app: FastAPI, logged: dict[str, dict[str, Any]]
) -> None:
    page = await _app_calls(app, BUILDER, LogFilter(), _page())
    assert [(item.request_id, item.caller_workspace_id) for item in page.list] == [
        (logged["other"]["request_id"], OTHER),
        (logged["mid"]["request_id"], CALLER),
        (logged["old"]["request_id"], CALLER),
    ]
    shown = set(page.list[0].model_dump(by_alias=True))
    assert not shown & {"args", "clientIp", "keyId", "accountId"}
    assert (await _app_calls(app, CALLER, LogFilter(), _page())).total_count == 0


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (LogFilter(api="getPost"), ["new", "mid"]),
        (LogFilter(app_id=APP), ["mid", "old"]),
        (LogFilter(status=403), ["mid"]),
        (LogFilter(status=500), []),
        (LogFilter(since=NOW - timedelta(hours=2)), ["new", "mid"]),  # inclusive
        (LogFilter(until=NOW - timedelta(hours=2)), ["old"]),  # exclusive
        (LogFilter(since=NOW - timedelta(hours=3), until=NOW - timedelta(hours=1)), ["mid", "old"]),
        (LogFilter(api="'; DROP TABLE request_logs; --"), []),
    ],
)
async def test_filters_narrow_the_callers_list(
    app: FastAPI, logged: dict[str, dict[str, Any]], filters: LogFilter, expected: list[str]
) -> None:
    page = await _own(app, CALLER, filters, _page())
    assert [item.request_id for item in page.list] == [logged[n]["request_id"] for n in expected]


async def test_sorting_and_paging(app: FastAPI, logged: dict[str, dict[str, Any]]) -> None:
    by_latency = await _own(app, CALLER, LogFilter(), _page(sort="latencyMs", order="asc"))
    assert [item.latency_ms for item in by_latency.list] == [1.0, 5.0, 9.0]
    second = await _own(app, CALLER, LogFilter(), _page(size=2, number=2))
    assert (second.total_count, second.total_page, second.page_no) == (3, 2, 2)
    assert [item.request_id for item in second.list] == [logged["old"]["request_id"]]
    with pytest.raises(ValidationError) as refused:
        await _own(app, CALLER, LogFilter(), _page(sort="args"))
    assert refused.value.reason == "invalid_sort_field"


def test_month_start_is_the_first_utc_instant_of_the_month() -> None:
    assert month_start(datetime(2026, 3, 31, 23, 59, 59, tzinfo=UTC)) == datetime(
        2026, 3, 1, tzinfo=UTC
    )
    # 00:30 on April 1st at UTC+2 is still March in UTC.
    plus_two = timezone(timedelta(hours=2))
    assert month_start(datetime(2026, 4, 1, 0, 30, tzinfo=plus_two)) == datetime(
        2026, 3, 1, tzinfo=UTC
    )


async def test_calls_this_month_counts_successful_calls_since_the_month_began(
    app: FastAPI,
) -> None:
    now = datetime(2026, 5, 15, 12, tzinfo=UTC)
    start = datetime(2026, 5, 1, tzinfo=UTC)
    await _write(
        app,
        log_row(workspace_id=CALLER, created_at=start),  # counted: the first instant
        log_row(workspace_id=CALLER, created_at=now - timedelta(days=1)),
        log_row(workspace_id=CALLER, created_at=start - timedelta(microseconds=1)),  # April
        log_row(workspace_id=CALLER, created_at=now, status=400, reason="invalid_arguments"),
        log_row(workspace_id=CALLER, created_at=now, status=500, reason="internal_error"),
        log_row(workspace_id=OTHER, created_at=now),
        log_row(workspace_id=None, created_at=now, status=401),
    )
    async with unit_of_work(app.state.sessionmaker) as session:
        assert await calls_this_month(session, CALLER, now) == 2
        assert await calls_this_month(session, OTHER, now) == 1
        assert await calls_this_month(session, BUILDER, now) == 0
