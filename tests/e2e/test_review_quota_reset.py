"""A monthly quota's refusal says when the quota resets, under review.

`callsPerMonth` (gateway) and `uploadsPerMonth` (management API) count a UTC calendar month: their
403 `quota_exceeded` carries `Retry-After`, the whole seconds until the next month begins, and
`data.resetTime`, that moment; `/user/plans` shows the same `resetTime` beside their use. Stock
quotas (records, apps, ...) are freed, not reset, and a limit of 0 never lets a request through:
neither says a time.

The clock is frozen where the quota meter, the request log, the file service and the monthly
counts read it (`utcnow` in each module, and the meter's `time.time()` that tells it a month has
ended)."""

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.gateway.stages.log import request_log_buffer
from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._clock import Clock, frozen_clock
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, make_admin, register

CLOCKED = (
    "apiforge.plans.meter",
    "apiforge.plans.hits",
    "apiforge.plans.quotas",
    "apiforge.plans.service",
    "apiforge.usage.counters",
    "apiforge.gateway.stages.log",
    "apiforge.files.service",
    "apiforge.files.usage",
)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return frozen_clock(monkeypatch, CLOCKED, datetime(2026, 1, 31, 23, 59, 30, tzinfo=UTC))


async def _pinging(app: FastAPI, client: AsyncClient, **quotas: int) -> tuple[User, str]:
    """An account whose personal workspace has an app with a free `ping` API, on a plan with
    `quotas`."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    await new_api(client, owner.headers, app_id, "ping", steps=[set_step("p", 1)])
    await on_plan(client, await make_admin(app, client), owner.workspace_id, "monthly", **quotas)
    return owner, app_id


async def _ping(client: AsyncClient, owner: User, app_id: str) -> Response:
    body = {"appId": app_id, "api": "ping", "version": "dev", "args": {}}
    return await client.post("/api/v1/invocations", json=body, headers=owner.headers)


async def _usage(app: FastAPI, client: AsyncClient, owner: User) -> dict[str, Any]:
    await request_log_buffer(app.state.gateway_state).flush()
    plans = data_of(await client.get("/api/v1/user/plans", headers=owner.headers))
    return {row["quota"]: row for row in plans["usage"]}


async def _upload(client: AsyncClient, user: User, *names: str) -> Response:
    return await client.post(
        "/api/v1/multiple-files",
        files=[("files", (name, b"x", "text/plain")) for name in names],
        headers=user.headers,
    )


def _resets(response: Response, quota: str, seconds: int, moment: str) -> None:
    """A 403 for `quota` that says it resets at `moment`, `seconds` from now."""
    data = assert_error(response, 403, "quota_exceeded")
    assert (data["quota"], data["resetTime"]) == (quota, moment)
    assert response.headers["Retry-After"] == str(seconds)


def _never_resets(response: Response, quota: str) -> None:
    data = assert_error(response, 403, "quota_exceeded")
    assert data["quota"] == quota
    assert "resetTime" not in data
    assert "Retry-After" not in response.headers


# --- callsPerMonth (gateway) ------------------------------------------------------------------


async def test_a_calls_refusal_says_the_seconds_until_the_next_utc_month(
    app: FastAPI, client: AsyncClient, clock: Clock
) -> None:
    owner, app_id = await _pinging(app, client, callsPerMonth=1)
    assert (await _ping(client, owner, app_id)).status_code == 200
    _resets(await _ping(client, owner, app_id), "callsPerMonth", 30, "2026-02-01T00:00:00Z")

    # A fraction of a second rounds up: waiting the seconds given always finds the month over.
    clock.now = datetime(2026, 1, 31, 23, 58, 59, 250_000, tzinfo=UTC)
    _resets(await _ping(client, owner, app_id), "callsPerMonth", 61, "2026-02-01T00:00:00Z")

    usage = await _usage(app, client, owner)
    assert usage["callsPerMonth"] == {
        "quota": "callsPerMonth",
        "limit": 1,
        "used": 1,
        "warning": 1,
        "resetTime": "2026-02-01T00:00:00Z",
    }
    assert usage["uploadsPerMonth"]["resetTime"] == "2026-02-01T00:00:00Z"
    for stock in ("members", "workspaces", "apps", "records", "storageBytes"):
        assert usage[stock]["resetTime"] is None, stock


async def test_december_rolls_over_into_january_of_the_next_year(
    app: FastAPI, client: AsyncClient, clock: Clock
) -> None:
    clock.now = datetime(2026, 12, 31, 23, 59, 59, tzinfo=UTC)
    owner, app_id = await _pinging(app, client, callsPerMonth=1)
    assert (await _ping(client, owner, app_id)).status_code == 200
    _resets(await _ping(client, owner, app_id), "callsPerMonth", 1, "2027-01-01T00:00:00Z")
    assert (await _usage(app, client, owner))["callsPerMonth"]["resetTime"] == (
        "2027-01-01T00:00:00Z"
    )

    clock.now = datetime(2027, 1, 1, tzinfo=UTC)  # when the refusal said: the call is let through
    assert (await _ping(client, owner, app_id)).status_code == 200
    _resets(await _ping(client, owner, app_id), "callsPerMonth", 31 * 86400, "2027-02-01T00:00:00Z")


async def test_no_calls_at_all_and_stock_quotas_say_no_reset_time(
    app: FastAPI, client: AsyncClient, clock: Clock
) -> None:
    """A limit of 0 lets no call through in any month, and apps are freed, not reset: a wait
    would lead nowhere, so neither refusal names a time to wait for."""
    owner, app_id = await _pinging(app, client, callsPerMonth=0, apps=1)
    _never_resets(await _ping(client, owner, app_id), "callsPerMonth")
    response = await client.post("/api/v1/apps", json={"name": "Second"}, headers=owner.headers)
    _never_resets(response, "apps")


# --- uploadsPerMonth (management API) ---------------------------------------------------------


async def test_an_uploads_refusal_says_when_the_month_resets(
    app: FastAPI, client: AsyncClient, clock: Clock
) -> None:
    clock.now = datetime(2026, 12, 31, 23, 0, tzinfo=UTC)
    user = await register(client)
    await on_plan(client, await make_admin(app, client), user.workspace_id, uploadsPerMonth=2)
    data_of(await _upload(client, user, "a.txt"))
    _resets(
        await _upload(client, user, "b.txt", "c.txt"),
        "uploadsPerMonth",
        3600,
        "2027-01-01T00:00:00Z",
    )
    data_of(await _upload(client, user, "b.txt"))
    _resets(await _upload(client, user, "c.txt"), "uploadsPerMonth", 3600, "2027-01-01T00:00:00Z")

    usage = await _usage(app, client, user)
    assert usage["uploadsPerMonth"] == {
        "quota": "uploadsPerMonth",
        "limit": 2,
        "used": 2,
        "warning": 1,
        "resetTime": "2027-01-01T00:00:00Z",
    }

    clock.now = datetime(2027, 1, 1, tzinfo=UTC)
    data_of(await _upload(client, user, "c.txt"))


async def test_more_files_than_any_month_allows_say_no_reset_time(
    app: FastAPI, client: AsyncClient, clock: Clock
) -> None:
    user = await register(client)
    await on_plan(client, await make_admin(app, client), user.workspace_id, uploadsPerMonth=2)
    _never_resets(await _upload(client, user, "a.txt", "b.txt", "c.txt"), "uploadsPerMonth")
