"""Traffic and HTTP edges reviewed a fourth time: leases too short for a call to end under them
are refused at start (and a management request keeps its idempotency claim while it runs),
per-IP limits count an IPv6 client by its /64, and a method override that can't be honoured is
a 400 on which nothing runs."""

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.core.settings import InvalidSettingsError, Settings
from apiforge.engine.base import RunLimits
from tests.e2e._apps import new_app
from tests.e2e._keys import call
from tests.e2e._traffic import limited_app, redis_server, slow_upstream
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import app_client, register

BUDGET = RunLimits().time_budget_seconds
LEASES = ("traffic_lease_seconds", "idempotency_lease_seconds")


def _smallest_accepted(field: str) -> int:
    """The shortest lease `Settings` lets a server start with (found by asking it)."""
    low, high = 1, 3600  # high is accepted (the defaults are below it)
    while low < high:
        middle = (low + high) // 2
        try:
            Settings(**{field: middle})
        except InvalidSettingsError:
            low = middle + 1
        else:
            high = middle
    return low


# --- leases ------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", LEASES)
@pytest.mark.parametrize("seconds", [1, 5, 9, int(BUDGET), int(5 * BUDGET)])
def test_a_lease_a_call_can_outlive_stops_the_start_naming_the_variable(
    field: str, seconds: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A concurrency lease of 1-9 s (or an idempotency claim's of 5 s and up) ran out under a
    call the engine lets run 10 s, besides its waits for the database: one call too many then
    ran at once, or a duplicate ran a second time. A lease under six call budgets (the steps'
    budget and the waits outside it, with room) stops the start, saying why."""
    variable = f"APIFORGE_{field.upper()}"
    monkeypatch.setenv(variable, str(seconds))
    with pytest.raises(InvalidSettingsError) as refused:
        Settings()
    message = str(refused.value)
    assert variable in message
    assert f"must be at least {int(6 * BUDGET)} s" in message


@pytest.mark.parametrize("field", LEASES)
def test_the_shortest_lease_accepted_is_six_call_budgets(field: str) -> None:
    assert _smallest_accepted(field) == 6 * BUDGET
    assert getattr(Settings(**{field: 6 * BUDGET}), field) == 6 * BUDGET


async def test_a_call_slower_than_the_old_shortest_lease_keeps_its_place(
    settings: Settings,
) -> None:
    """Concurrency places live in Redis as leases. With the shortest lease the settings took
    (1 s), a call of 2.5 s lost its place after one second and a second call was let in beside
    it, over a limit of 1. With the shortest lease accepted now, the place holds to the end."""
    lease = _smallest_accepted("traffic_lease_seconds")
    async with redis_server() as redis, slow_upstream(delay=2.5) as upstream:
        own = settings.model_copy(
            update={
                "redis_url": redis.url,
                "redis_prefix": "lease:",
                "http_allow_hosts": ["127.0.0.1"],
                "traffic_lease_seconds": lease,
            }
        )
        async with app_client(own) as (_, client):
            owner = await register(client)
            app_id, secret = await limited_app(
                client, owner, upstream.url, apis={"slow": {"concurrent": 1}}
            )
            first = asyncio.create_task(call(client, secret, app_id, "slow"))
            await upstream.wait_in_flight(1)
            await asyncio.sleep(1.5)  # past the old shortest lease, within the call
            second = await call(client, secret, app_id, "slow")
            data = assert_error(second, 429, "too_many_requests")
            assert data["limit"] == "concurrency"
            assert (await first).status_code == 200
            assert upstream.max_in_flight == 1
            assert upstream.served == 1
            # The place went back when the call ended: the next call gets it.
            upstream.delay = 0
            assert (await call(client, secret, app_id, "slow")).status_code == 200


async def test_a_management_request_outliving_its_lease_keeps_its_key_and_runs_once(
    settings: Settings,
) -> None:
    """A management route has no time bound of its own (an import or a publish grows with the
    app), so a fixed lease can't outlast it: a keyed request still running when its claim's
    lease ran out was run again by a retry that took the key over. The claim is renewed while
    the route runs; the retry waits (409) and then gets the one answer. (A 3 s lease, below
    what a server accepts, keeps the test short; renewal works the same at any length.)"""
    async with slow_upstream(delay=5.0) as upstream:
        own = settings.model_copy(
            update={"http_allow_hosts": ["127.0.0.1"], "idempotency_lease_seconds": 3}
        )
        async with app_client(own) as (_, client):
            user = await register(client)
            app_id = await new_app(client, user.headers, "Slow workflow")
            step = {"id": "up", "type": "httpRequest", "url": upstream.url, "timeout": 10}
            body = {"appId": app_id, "steps": [step]}
            headers = {**user.headers, "Idempotency-Key": "slow-run-1"}

            first = asyncio.create_task(
                client.post("/api/v1/workflows", json=body, headers=headers)
            )
            await upstream.wait_in_flight(1)
            await asyncio.sleep(3.5)  # the first lease is over; the route still runs
            retry = await client.post("/api/v1/workflows", json=body, headers=headers)
            assert_error(retry, 409, "idempotency_key_in_use")
            answer = await first
            assert data_of(answer)["up"]["status"] == 200
            replay = await client.post("/api/v1/workflows", json=body, headers=headers)
            assert replay.status_code == 200
            assert replay.json() == answer.json()
            assert upstream.served == 1


# --- per-IP limits and IPv6 -----------------------------------------------------------------------


def _behind_proxy(settings: Settings) -> Settings:
    """The test client's socket peer (127.0.0.1) is a trusted proxy: `X-Forwarded-For` names
    the client."""
    return settings.model_copy(update={"trusted_proxies": ["127.0.0.1"]})


async def _from(client: AsyncClient, secret: str, app_id: str, address: str) -> int:
    headers = {"X-Forwarded-For": address}
    response = await call(client, secret, app_id, "echo", {"text": "a"}, headers=headers)
    return response.status_code


async def test_ip_per_minute_counts_an_ipv6_client_by_its_64(settings: Settings) -> None:
    """`ipPerMinute` counted each IPv6 address apart: a client owns a whole /64 and stepped
    through its addresses to call without limit. Its /64 is one client now."""
    async with app_client(_behind_proxy(settings)) as (_, client):
        owner = await register(client)
        app_id, secret = await limited_app(client, owner, ipPerMinute=2)
        assert await _from(client, secret, app_id, "2001:db8:1:2::1") == 200
        assert await _from(client, secret, app_id, "2001:db8:1:2:aaaa::7") == 200
        rotated = await call(
            client,
            secret,
            app_id,
            "echo",
            {"text": "a"},
            headers={"X-Forwarded-For": "2001:db8:1:2:ffff:ffff:ffff:ffff"},
        )
        data = assert_error(rotated, 429, "too_many_requests")
        assert data["scope"] == "ip"
        # The next /64 is another client; so is every IPv4 address.
        assert await _from(client, secret, app_id, "2001:db8:1:3::1") == 200
        assert await _from(client, secret, app_id, "203.0.113.7") == 200
        assert await _from(client, secret, app_id, "203.0.113.8") == 200
        assert await _from(client, secret, app_id, "203.0.113.8") == 200
        assert await _from(client, secret, app_id, "203.0.113.8") == 429


async def test_an_ipv4_mapped_address_counts_as_its_ipv4_address(settings: Settings) -> None:
    async with app_client(_behind_proxy(settings)) as (_, client):
        owner = await register(client)
        app_id, secret = await limited_app(client, owner, ipPerMinute=2)
        assert await _from(client, secret, app_id, "::ffff:203.0.113.9") == 200
        assert await _from(client, secret, app_id, "203.0.113.9") == 200
        assert await _from(client, secret, app_id, "::ffff:cb00:7109") == 429  # the same address
        assert await _from(client, secret, app_id, "::ffff:203.0.113.10") == 200


async def test_failed_sign_ins_count_an_ipv6_client_by_its_64(settings: Settings) -> None:
    """The sign-in throttle counted failures per IPv6 address: rotating addresses of one /64
    (and emails) tried passwords without end. After five failures from a /64, the sixth is
    throttled whatever address of it and email it uses; another /64 is not."""
    own = _behind_proxy(settings).model_copy(update={"login_max_failures": 5})
    async with app_client(own) as (_, client):

        async def sign_in(n: int, address: str) -> Any:
            body = {"email": f"nobody{n}@example.com", "password": "wrong password 1"}
            headers = {"X-Forwarded-For": address}
            return await client.post("/api/v1/auth/login", json=body, headers=headers)

        for n in range(5):
            assert_error(await sign_in(n, f"2001:db8:5:6::{n + 1:x}"), 401, "invalid_credentials")
        assert_error(await sign_in(5, "2001:db8:5:6:9:9:9:9"), 429, "login_throttled")
        assert_error(await sign_in(6, "2001:db8:5:7::1"), 401, "invalid_credentials")


# --- X-HTTP-Method-Override ---------------------------------------------------------------------


async def _workspace_count(client: AsyncClient, headers: dict[str, str]) -> int:
    listed = data_of(await client.get("/api/v1/workspaces", headers=headers))
    return len(listed["list"])


@pytest.mark.parametrize("override", ["GET", "TRACE", "foo", "head", "OPTIONS"])
async def test_a_post_asking_for_another_method_is_a_400_and_runs_nothing(
    client: AsyncClient, override: str
) -> None:
    """`X-HTTP-Method-Override: GET` (or `TRACE`, `foo`) on a POST ran the request as the POST
    the client had not asked for: here, created a workspace. It is refused now."""
    user = await register(client)
    before = await _workspace_count(client, user.headers)
    headers = {**user.headers, "X-HTTP-Method-Override": override}
    response = await client.post("/api/v1/workspaces", json={"name": "Team"}, headers=headers)
    data = assert_error(response, 400, "invalid_method_override")
    assert data["errors"][0]["field"] == "X-HTTP-Method-Override"
    assert "X-Request-ID" in response.headers
    assert await _workspace_count(client, user.headers) == before


@pytest.mark.parametrize(("method", "override"), [("GET", "DELETE"), ("PATCH", "DELETE")])
async def test_an_override_on_a_request_that_is_no_post_is_a_400(
    client: AsyncClient, method: str, override: str
) -> None:
    """The override is for clients that can only send POST (DESIGN.md §2). On another method
    it was ignored, so a client asking for a DELETE got the PATCH it sent run instead."""
    user = await register(client)
    headers = {**user.headers, "X-HTTP-Method-Override": override}
    path = f"/api/v1/workspaces/{user.workspace_id}"
    kwargs: dict[str, Any] = {"json": {"name": "Renamed"}} if method == "PATCH" else {}
    response = await client.request(method, path, headers=headers, **kwargs)
    assert_error(response, 400, "invalid_method_override")
    shown = data_of(await client.get(path, headers=user.headers))
    assert shown["name"] != "Renamed"


async def test_an_override_naming_the_requests_own_method_changes_nothing(
    client: AsyncClient,
) -> None:
    user = await register(client)
    before = await _workspace_count(client, user.headers)
    headers = {**user.headers, "X-HTTP-Method-Override": "post"}
    data_of(await client.post("/api/v1/workspaces", json={"name": "Team"}, headers=headers))
    assert await _workspace_count(client, user.headers) == before + 1
    got = await client.get(
        "/api/v1/workspaces", headers={**user.headers, "X-HTTP-Method-Override": "GET"}
    )
    assert got.status_code == 200


@pytest.mark.parametrize("override", ["GET", "TRACE", "foo"])
async def test_a_gateway_call_asking_for_another_method_is_a_400_and_runs_nothing(
    settings: Settings, override: str
) -> None:
    own = settings.model_copy(update={"http_allow_hosts": ["127.0.0.1"]})
    async with slow_upstream() as upstream, app_client(own) as (app, client):
        assert isinstance(app, FastAPI)
        owner = await register(client)
        app_id, secret = await limited_app(client, owner, upstream.url)
        headers = {"X-HTTP-Method-Override": override}
        refused = await call(client, secret, app_id, "slow", headers=headers)
        data = assert_error(refused, 400, "invalid_method_override")
        assert data["errors"][0]["field"] == "X-HTTP-Method-Override"
        assert "X-Request-ID" in refused.headers
        assert upstream.served == 0
        # An override the gateway can't serve is still a 405; none at all runs the call.
        moved = await call(
            client, secret, app_id, "slow", headers={"X-HTTP-Method-Override": "PUT"}
        )
        assert_error(moved, 405, "method_not_allowed")
        assert (await call(client, secret, app_id, "slow")).status_code == 200
        assert upstream.served == 1
