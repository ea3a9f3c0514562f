"""`/api/v1/usage/calls`: gateway calls per hour or day and per app or API, zero-filled over the
range (spec 003 chart format), or their shares as a pie; the caller's own calls or, for builders,
the calls to their apps; never another workspace's; bad ranges refused."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.gateway.stages.log import request_log_buffer
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id
from apiforge.usage.buffer import RequestLogBuffer
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import assert_error, data_of, team
from tests.factories import User, register
from tests.unit.usage._rows import log_row

TEXT = [{"name": "text", "type": "string", "required": True, "max": 20}]


async def _vault(client: AsyncClient, builder: User) -> str:
    """A public app `Vault` with `ping` (a required `text`) and `pong`, published."""
    app_id = await new_app(client, builder.headers, "Vault", visibility="public")
    ping = [{"id": "p", "type": "set", "value": {"expr": "args.text"}}]
    await new_api(client, builder.headers, app_id, "ping", params=TEXT, steps=ping, price=100)
    pong = [{"id": "p", "type": "set", "value": 1}]
    await new_api(client, builder.headers, app_id, "pong", steps=pong, price=100)
    response = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=builder.headers
    )
    data_of(response)
    return app_id


async def _chart(client: AsyncClient, headers: dict[str, str], **query: Any) -> dict[str, Any]:
    chart: dict[str, Any] = data_of(
        await client.get("/api/v1/usage/calls", params=query, headers=headers)
    )
    return chart


def _days(count: int, now: datetime) -> tuple[str, str, list[str]]:
    """`from`, `to` and the axis of the last `count` UTC days to `now`'s, included."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=count - 1)
    axis = [(start + timedelta(days=n)).strftime("%Y-%m-%d") for n in range(count)]
    return start.isoformat(), (today + timedelta(days=1)).isoformat(), axis


@pytest.fixture
async def traffic(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """A consumer called the builder's Vault: ping x3, pong x1, one ping refused (no text).
    The clock is frozen at noon today where the calls are stamped and where charts end, so a
    UTC midnight during the test cannot move them to another day than the test expects."""
    now = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    for module in ("apiforge.gateway.stages.log", "apiforge.usage.charts"):
        monkeypatch.setattr(f"{module}.utcnow", lambda: now)
    builder, consumer = await register(client), await register(client)
    app_id = await _vault(client, builder)
    _, secret = await app_key(client, consumer, app_id)
    for _ in range(3):
        assert (await call(client, secret, app_id, "ping", {"text": "hi"})).status_code == 200
    assert (await call(client, secret, app_id, "pong")).status_code == 200
    assert (await call(client, secret, app_id, "ping")).status_code == 400
    await request_log_buffer(app.state.gateway_state).flush()
    return {"builder": builder, "consumer": consumer, "app_id": app_id, "now": now}


async def test_calls_per_day_per_app_are_zero_filled(
    client: AsyncClient, traffic: dict[str, Any]
) -> None:
    consumer, app_id = traffic["consumer"], traffic["app_id"]
    since, until, axis = _days(3, traffic["now"])
    chart = await _chart(client, consumer.headers, **{"from": since, "to": until})
    assert chart == {
        "xAxis": axis,
        "series": [{"id": app_id, "name": "Vault", "data": [0, 0, 5]}],
    }
    ok = await _chart(
        client, consumer.headers, **{"from": since, "to": until, "outcome": "success"}
    )
    assert ok["series"][0]["data"] == [0, 0, 4]
    failed = await _chart(client, consumer.headers, **{"from": since, "outcome": "failure"})
    assert sum(failed["series"][0]["data"]) == 1
    # By default: the last 30 days, ending today.
    default = await _chart(client, consumer.headers)
    assert len(default["xAxis"]) == 30
    assert default["xAxis"][-1] == axis[-1]
    assert default["series"][0]["data"][-1] == 5


async def test_calls_per_api_and_their_shares(client: AsyncClient, traffic: dict[str, Any]) -> None:
    consumer, app_id = traffic["consumer"], traffic["app_id"]
    since, _, _ = _days(1, traffic["now"])
    per_api = await _chart(client, consumer.headers, **{"from": since, "groupBy": "api"})
    assert per_api["series"] == [
        {"id": f"{app_id}/ping", "name": "Vault/ping", "data": [4]},
        {"id": f"{app_id}/pong", "name": "Vault/pong", "data": [1]},
    ]
    shares = await _chart(client, consumer.headers, chart="pie", groupBy="api", outcome="success")
    assert shares == {
        "series": [
            {"id": f"{app_id}/ping", "name": "Vault/ping", "value": 3},
            {"id": f"{app_id}/pong", "name": "Vault/pong", "value": 1},
        ]
    }
    top = await _chart(client, consumer.headers, chart="pie", groupBy="api", top=1)
    assert [(s["id"], s["value"]) for s in top["series"]] == [(f"{app_id}/ping", 4), ("_other", 1)]


async def test_builders_see_calls_to_their_apps_and_nobody_else_does(
    client: AsyncClient, traffic: dict[str, Any]
) -> None:
    builder, consumer, app_id = traffic["builder"], traffic["consumer"], traffic["app_id"]
    builder_view = await _chart(client, builder.headers, scope="builder", chart="pie")
    assert builder_view["series"] == [{"id": app_id, "name": "Vault", "value": 5}]
    # The builder made no calls itself; the consumer has no apps anyone called.
    assert (await _chart(client, builder.headers, chart="pie"))["series"] == []
    assert (await _chart(client, consumer.headers, scope="builder", chart="pie"))["series"] == []
    stranger = await register(client)
    for scope in ("caller", "builder"):
        view = await _chart(client, stranger.headers, scope=scope)
        assert view["series"] == []
        assert len(view["xAxis"]) == 30
    foreign = {**stranger.headers, "X-Workspace-Id": consumer.workspace_id}
    assert_error(
        await client.get("/api/v1/usage/calls", headers=foreign), 404, "workspace_not_found"
    )
    # A narrower appId filter, and another app's id, filter rather than leak.
    only = await _chart(client, consumer.headers, chart="pie", appId=app_id)
    assert only["series"][0]["value"] == 5
    other = await _chart(client, consumer.headers, chart="pie", appId=new_id())
    assert other["series"] == []


async def test_team_members_see_the_workspace_chart(client: AsyncClient) -> None:
    _, workspace_id, members = await team(client, "viewer")
    headers = {**members["viewer"].headers, "X-Workspace-Id": workspace_id}
    chart = await _chart(client, headers, granularity="hour")
    assert len(chart["xAxis"]) == 24
    assert chart["series"] == []


async def test_a_private_app_s_name_never_reaches_a_caller_who_guessed_its_id(
    app: FastAPI, client: AsyncClient
) -> None:
    owner, prying = await register(client), await register(client)
    hidden = await new_app(client, owner.headers, "Secret Project")
    await new_api(
        client, owner.headers, hidden, "x", steps=[{"id": "x", "type": "set", "value": 1}]
    )
    # A key of the prying workspace (bound to a public app) sent to the private app's id.
    public = await _vault(client, owner)
    _, secret = await app_key(client, prying, public)
    assert_error(await call(client, secret, hidden, "x"), 404, "app_not_found")
    await request_log_buffer(app.state.gateway_state).flush()
    chart = await _chart(client, prying.headers, chart="pie")
    assert chart["series"] == [{"id": hidden, "name": hidden, "value": 1}]


async def test_hourly_buckets_place_calls_in_their_utc_hour(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    app_id = new_id()
    base = datetime(2026, 3, 1, 10, 15, tzinfo=UTC)
    rows = [
        log_row(workspace_id=user.workspace_id, app_id=app_id, api="a", created_at=moment)
        for moment in (base, base + timedelta(minutes=44), base + timedelta(hours=2))
    ]
    rows.append(log_row(workspace_id=new_id(), app_id=app_id, created_at=base))  # another tenant
    buffer = RequestLogBuffer(app.state.engine, interval=3600)
    for row in rows:
        buffer.append(row)
    await buffer.close()
    query = {"from": "2026-03-01T10:00:00Z", "to": "2026-03-01T12:30:00Z", "granularity": "hour"}
    chart = await _chart(client, user.headers, **query)
    assert chart == {
        "xAxis": ["2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z", "2026-03-01T12:00:00Z"],
        "series": [{"id": app_id, "name": app_id, "data": [2, 0, 1]}],
    }
    days = await _chart(client, user.headers, **{"from": "2026-02-28", "to": "2026-03-02"})
    assert days["series"][0]["data"] == [0, 3]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ({"granularity": "minute"}, "invalid_input"),
        ({"groupBy": "caller"}, "invalid_input"),
        ({"chart": "radar"}, "invalid_input"),
        ({"scope": "everyone"}, "invalid_input"),
        ({"outcome": "maybe"}, "invalid_input"),
        ({"top": "0"}, "invalid_input"),
        ({"top": "51"}, "invalid_input"),
        ({"top": "1e9"}, "invalid_input"),
        ({"from": "yesterday"}, "invalid_input"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "invalid_input"),
        ({"from": "2026-03-01", "to": "2026-03-01"}, "invalid_input"),
        ({"from": "2026-03-01T18:00:00Z", "to": "2026-03-01T06:00:00Z"}, "invalid_input"),
        (
            {"from": "2026-03-01T10:30:00Z", "to": "2026-03-01T10:10:00Z", "granularity": "hour"},
            "invalid_input",
        ),
        ({"from": "2026-03-01T10:10:00Z", "to": "2026-03-01T10:10:00Z"}, "invalid_input"),
        ({"to": "9999-12-31T23:59:59Z", "granularity": "hour"}, "invalid_input"),
        ({"from": "2026-01-01", "to": "2026-02-02", "granularity": "hour"}, "range_too_large"),
        ({"from": "2020-01-01", "to": "2026-01-01"}, "range_too_large"),
        ({"from": "0001-01-01"}, "range_too_large"),
        ({"appId": "x" * 27}, "invalid_input"),
        ({"from": "2" * 41}, "invalid_input"),
    ],
)
async def test_bad_chart_queries_are_refused(
    client: AsyncClient, query: dict[str, str], reason: str
) -> None:
    user = await register(client)
    response = await client.get("/api/v1/usage/calls", params=query, headers=user.headers)
    data = assert_error(response, 400, reason)
    assert data["errors"]


async def test_the_chart_needs_a_signed_in_caller(client: AsyncClient) -> None:
    response = await client.get("/api/v1/usage/calls")
    assert response.status_code == 401
