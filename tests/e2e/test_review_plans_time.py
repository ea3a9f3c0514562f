"""Plans over time, under review: monthly quotas at the UTC month boundary (a call still running
when the month ends), a plan deleted while a workspace moves onto it, and quota-hit rows when
the plan changes within their minute.

The clock is frozen where the quota meter, the request log, `/user/plans` and the monthly counts
read it (`utcnow` in each module, and the meter's `time.time()` that tells it a month has
ended)."""

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select

from apiforge.gateway.stages.log import request_log_buffer
from apiforge.plans.meter import quota_meter
from apiforge.plans.models import Plan
from apiforge.workspaces.models import Workspace
from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._clock import Clock, frozen_clock
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, make_admin, register

JAN_END = datetime(2031, 1, 31, 23, 59, 58, tzinfo=UTC)
FEB_START = datetime(2031, 2, 1, 0, 0, 1, tzinfo=UTC)
CLOCKED = (
    "apiforge.plans.meter",
    "apiforge.plans.hits",
    "apiforge.plans.service",
    "apiforge.usage.counters",
    "apiforge.gateway.stages.log",
)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return frozen_clock(monkeypatch, CLOCKED, JAN_END)


async def _plan(client: AsyncClient, admin: User, code: str, **quotas: int) -> str:
    body = {"code": code, "name": code.title(), "quotas": quotas}
    response = await client.post("/api/v1/admin/plans", json=body, headers=admin.headers)
    plan_id: str = data_of(response)["id"]
    return plan_id


async def _move(client: AsyncClient, admin: User, workspace_id: str, plan_id: str) -> Response:
    return await client.put(
        f"/api/v1/admin/workspaces/{workspace_id}/plan",
        json={"planId": plan_id},
        headers=admin.headers,
    )


async def _pinging(client: AsyncClient) -> tuple[User, str]:
    """An account whose personal workspace has an app with a free `ping` API."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    await new_api(client, owner.headers, app_id, "ping", steps=[set_step("p", 1)])
    return owner, app_id


async def _ping(client: AsyncClient, owner: User, app_id: str) -> Response:
    body = {"appId": app_id, "api": "ping", "version": "dev", "args": {}}
    return await client.post("/api/v1/invocations", json=body, headers=owner.headers)


async def _calls_usage(app: FastAPI, client: AsyncClient, owner: User) -> dict[str, Any]:
    await request_log_buffer(app.state.gateway_state).flush()
    plans = data_of(await client.get("/api/v1/user/plans", headers=owner.headers))
    usage: dict[str, Any] = next(u for u in plans["usage"] if u["quota"] == "callsPerMonth")
    return usage


# --- callsPerMonth at the UTC month boundary ----------------------------------------------------


async def test_calls_per_month_starts_afresh_when_the_utc_month_ends(
    app: FastAPI, client: AsyncClient, clock: Clock
) -> None:
    owner, app_id = await _pinging(client)
    admin = await make_admin(app, client)
    await _move(
        client, admin, owner.workspace_id, await _plan(client, admin, "two", callsPerMonth=2)
    )
    for _ in range(2):
        assert (await _ping(client, owner, app_id)).status_code == 200
    assert_error(await _ping(client, owner, app_id), 403, "quota_exceeded")
    assert await _calls_usage(app, client, owner) == {
        "quota": "callsPerMonth",
        "limit": 2,
        "used": 2,
        "warning": 1,
        "resetTime": "2031-02-01T00:00:00Z",
    }

    clock.now = FEB_START
    assert (await _calls_usage(app, client, owner))["used"] == 0
    for _ in range(2):
        assert (await _ping(client, owner, app_id)).status_code == 200
    refused = assert_error(await _ping(client, owner, app_id), 403, "quota_exceeded")
    assert (refused["limit"], refused["used"]) == (2, 2)
    assert (await _calls_usage(app, client, owner))["used"] == 2


async def test_a_call_running_when_the_month_ends_takes_nothing_of_the_next_month(
    app: FastAPI, client: AsyncClient, clock: Clock
) -> None:
    """A call admitted on January 31st that ends on February 1st is January's call (its log row
    is dated when it began): it neither holds one of February's places while it runs nor counts
    in February once it succeeds."""
    owner, app_id = await _pinging(client)
    admin = await make_admin(app, client)
    await _move(
        client, admin, owner.workspace_id, await _plan(client, admin, "two", callsPerMonth=2)
    )
    assert (await _ping(client, owner, app_id)).status_code == 200
    meter = quota_meter(app.state.engine)
    async with app.state.engine.connect() as connection:
        running = await meter.check_call(connection, owner.workspace_id)  # January's last place
    assert running is not None
    assert_error(await _ping(client, owner, app_id), 403, "quota_exceeded")

    clock.now = FEB_START
    for _ in range(2):  # February's two calls, the January call still running
        assert (await _ping(client, owner, app_id)).status_code == 200
    meter.end_call(owner.workspace_id, True, running)  # it ends, successfully
    refused = assert_error(await _ping(client, owner, app_id), 403, "quota_exceeded")
    assert (refused["limit"], refused["used"]) == (2, 2)
    assert (await _calls_usage(app, client, owner))["used"] == 2


# --- a plan deleted while a workspace moves onto it ---------------------------------------------


async def test_deleting_a_plan_while_a_workspace_moves_onto_it_is_409_or_404_never_500(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    owners = [await register(client) for _ in range(6)]
    for round_, owner in enumerate(owners):
        plan_id = await _plan(client, admin, f"short-{round_}")
        move = _move(client, admin, owner.workspace_id, plan_id)
        delete = client.delete(f"/api/v1/admin/plans/{plan_id}", headers=admin.headers)
        if round_ % 2:  # either request may reach the database first
            deleted, moved = await asyncio.gather(delete, move)
        else:
            moved, deleted = await asyncio.gather(move, delete)
        outcome = (moved.status_code, deleted.status_code)
        assert outcome in ((200, 409), (404, 200)), (moved.text, deleted.text)
        async with app.state.engine.connect() as connection:
            plan = await connection.scalar(select(Plan.id).where(Plan.id == plan_id))
            on = await connection.scalar(
                select(Workspace.plan_id).where(Workspace.id == owner.workspace_id)
            )
        if outcome == (200, 409):
            data = assert_error(deleted, 409, "plan_in_use")
            assert data["workspaceCount"] == 1
            assert (plan, on) == (plan_id, plan_id)
        else:
            assert_error(moved, 404, "plan_not_found")
            assert plan is None
            assert on != plan_id


# --- quota hits when the plan changes within their minute ---------------------------------------


async def test_a_quota_hit_row_shows_the_plan_and_limit_of_its_last_refusal(
    app: FastAPI, client: AsyncClient, clock: Clock
) -> None:
    """Refusals of one minute fold into one row whose `limit` and `used` are the last
    refusal's: after a move to a bigger plan within the minute, not the old plan's limit beside
    the new use (`used` 2 of a `limit` of 1)."""
    owner, app_id = await _pinging(client)
    admin = await make_admin(app, client)
    small = await _plan(client, admin, "one", callsPerMonth=1)
    bigger = await _plan(client, admin, "two", callsPerMonth=2)
    await _move(client, admin, owner.workspace_id, small)
    assert (await _ping(client, owner, app_id)).status_code == 200
    assert_error(await _ping(client, owner, app_id), 403, "quota_exceeded")
    await _move(client, admin, owner.workspace_id, bigger)
    assert (await _ping(client, owner, app_id)).status_code == 200
    refused = assert_error(await _ping(client, owner, app_id), 403, "quota_exceeded")
    assert (refused["limit"], refused["used"]) == (2, 2)

    await quota_meter(app.state.engine).hits.flush()
    response = await client.get(
        "/api/v1/admin/quota-hits",
        params={"workspaceId": owner.workspace_id},
        headers=admin.headers,
    )
    hits = data_of(response)["list"]
    assert [(h["planId"], h["limit"], h["used"], h["hits"]) for h in hits] == [(bigger, 2, 2, 2)]
