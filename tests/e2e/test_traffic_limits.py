"""Traffic limits end to end in one process (memory, or Redis when the suite has it): the
management API for an app's limits, frequency limits per IP, per key and per plan with their
headers, concurrency limits per API and per key, and key creation's own limit."""

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from tests.e2e._apps import in_workspace, new_app
from tests.e2e._keys import app_key, call, create_key
from tests.e2e._plans import on_plan
from tests.e2e._traffic import limited_app, metric_value, set_limits, slow_upstream
from tests.e2e._workspaces import add_member, assert_error, data_of, new_workspace
from tests.factories import make_admin, register

REJECTIONS = "apiforge_limit_rejections_total"
POLICY = re.compile(r'^"(\w+)";q=(\d+);w=(\d+)(, "(\w+)";q=(\d+);w=(\d+))*$')


@pytest.fixture
async def upstream_client(settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    """An app whose `httpRequest` steps may reach 127.0.0.1 (the test's slow upstream)."""
    application = create_app(settings.model_copy(update={"http_allow_hosts": ["127.0.0.1"]}))
    transport = ASGITransport(app=application, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield application, http
    await shutdown(application)


async def test_limits_are_read_and_replaced_by_editors_only(client: AsyncClient) -> None:
    owner = await register(client)
    app_id, _ = await limited_app(client, owner)
    empty = data_of(
        await client.get(f"/api/v1/apps/{app_id}/traffic-limits", headers=owner.headers)
    )
    assert empty == {
        "appId": app_id,
        "ipPerMinute": None,
        "keyPerMinute": None,
        "concurrentPerKey": None,
        "concurrent": None,
        "apis": {},
        "updatedTime": None,
        "version": 0,
    }
    saved = await set_limits(
        client, owner, app_id, ipPerMinute=100, apis={"echo": {"keyPerMinute": 5, "concurrent": 3}}
    )
    assert saved["ipPerMinute"] == 100
    assert saved["apis"] == {
        "echo": {"ipPerMinute": None, "keyPerMinute": 5, "concurrentPerKey": None, "concurrent": 3}
    }
    again = data_of(
        await client.get(f"/api/v1/apps/{app_id}/traffic-limits", headers=owner.headers)
    )
    assert again == saved

    url = f"/api/v1/apps/{app_id}/traffic-limits"
    bad: list[Any] = [
        {"ipPerMinute": 0},
        {"ipPerMinute": -5},
        {"ipPerMinute": "10"},
        {"ipPerMinute": 1.5},
        {"ipPerMinute": True},
        {"ipPerMinute": 10**12},
        {"concurrent": 100_001},
        {"perSecond": 3},
        {"apis": {"echo": {"nonsense": 1}}},
        {"apis": {"bad name!": {"concurrent": 1}}},
        {"apis": []},
        [],
    ]
    for body in bad:
        assert_error(await client.put(url, json=body, headers=owner.headers), 400, "invalid_input")
    refused = assert_error(
        await client.put(url, json={"apis": {"missing": {"concurrent": 1}}}, headers=owner.headers),
        400,
        "invalid_input",
    )
    assert refused["errors"] == [{"field": "apis.missing", "message": "no such API"}]
    malformed = await client.put(
        url, content=b"{not json", headers={**owner.headers, "Content-Type": "application/json"}
    )
    assert malformed.status_code == 400
    assert data_of(await client.get(url, headers=owner.headers)) == saved  # nothing changed

    # Another tenant sees nothing; a viewer of the workspace may read but not write.
    stranger = await register(client)
    assert_error(await client.get(url, headers=stranger.headers), 404, "app_not_found")
    assert_error(await client.put(url, json={}, headers=stranger.headers), 404, "app_not_found")
    team = await new_workspace(client, owner)
    viewer = await register(client)
    await add_member(client, owner, team, viewer, "viewer")
    team_app = await new_app(client, in_workspace(owner, team), "Team app")
    team_url = f"/api/v1/apps/{team_app}/traffic-limits"
    assert data_of(await client.get(team_url, headers=in_workspace(viewer, team)))["apis"] == {}
    denied = await client.put(team_url, json={"concurrent": 1}, headers=in_workspace(viewer, team))
    assert_error(denied, 403, "insufficient_role")

    cleared = await set_limits(client, owner, app_id)
    assert cleared["apis"] == {}
    assert cleared["ipPerMinute"] is None


async def test_a_key_limit_refuses_the_call_over_it_with_rate_limit_headers(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id, secret = await limited_app(client, owner, apis={"echo": {"keyPerMinute": 3}})
    for n in range(3):
        response = await call(client, secret, app_id, "echo", {"text": f"n{n}"})
        assert data_of(response) == {"echo": f"n{n}"}
        # Every counted call names its policies; the plan's rate applies to all calls too.
        assert response.headers["RateLimit-Policy"] == '"key";q=3;w=60, "plan";q=600;w=60'
    refused = await call(client, secret, app_id, "echo", {"text": "over"})
    data = assert_error(refused, 429, "too_many_requests")
    retry = int(refused.headers["Retry-After"])
    assert 1 <= retry <= 120  # the previous window may weigh for up to one more
    assert data == {
        "error": "too_many_requests",
        "limit": "frequency",
        "scope": "key",
        "max": 3,
        "retryAfter": retry,
    }
    assert POLICY.match(refused.headers["RateLimit-Policy"])
    assert refused.headers["RateLimit"] == f'"key";r=0;t={retry}'
    assert refused.headers["X-RateLimit-Limit"] == "3"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.headers["X-RateLimit-Reset"] == str(retry)

    # The limit is per API and per key: another API, and another key, still get through.
    assert data_of(await call(client, secret, app_id, "other", {"text": "a"})) == {"echo": "a"}
    _, second = await create_key(client, owner.headers, type="app", appId=app_id)
    assert data_of(await call(client, second, app_id, "echo", {"text": "b"})) == {"echo": "b"}
    metrics = (await client.get("/metrics")).text
    assert (
        metric_value(metrics, "apiforge_limit_rejections_total", kind="frequency", scope="key") >= 1
    )


async def test_an_ip_limit_counts_every_key_from_one_address(client: AsyncClient) -> None:
    owner = await register(client)
    app_id, first = await limited_app(client, owner, ipPerMinute=2)
    _, second = await create_key(client, owner.headers, type="app", appId=app_id)
    assert (await call(client, first, app_id, "echo")).status_code == 200
    assert (await call(client, second, app_id, "echo")).status_code == 200
    refused = await call(client, first, app_id, "echo")
    assert assert_error(refused, 429, "too_many_requests")["scope"] == "ip"
    assert_error(await call(client, second, app_id, "echo"), 429, "too_many_requests")
    # App-wide values are per API: the app's other API has its own window.
    assert (await call(client, second, app_id, "other")).status_code == 200


async def test_the_plan_sets_requests_per_minute_for_the_calling_workspace(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    owner = await register(client)
    quotas = {"requestsPerMinute": 2, "concurrentRequests": -1}
    await on_plan(client, admin, owner.workspace_id, "tiny", **quotas)
    app_id, secret = await limited_app(client, owner, visibility="public")
    assert (await call(client, secret, app_id, "echo")).status_code == 200
    assert (await call(client, secret, app_id, "other")).status_code == 200
    refused = await call(client, secret, app_id, "echo")
    assert assert_error(refused, 429, "too_many_requests")["scope"] == "plan"
    assert refused.headers["RateLimit-Policy"] == '"plan";q=2;w=60'
    # Another workspace (free plan) calling the same app is not affected by this one's plan.
    consumer = await register(client)
    _, other = await app_key(client, consumer, app_id)
    for _ in range(3):
        assert (await call(client, other, app_id, "echo")).status_code == 200


async def test_a_plan_change_applies_to_the_next_call_on_the_node_that_made_it(
    app: FastAPI, client: AsyncClient
) -> None:
    """The traffic stage's cached plan rates are forgotten once the change commits, as the
    quota meter's are: no call on this node runs on the old rate meanwhile."""
    admin = await make_admin(app, client)
    owner = await register(client)
    plan_id = await on_plan(client, admin, owner.workspace_id, "roomy", requestsPerMinute=50)
    app_id, secret = await limited_app(client, owner, visibility="public")
    response = await call(client, secret, app_id, "echo")
    assert response.headers["RateLimit-Policy"] == '"plan";q=50;w=60'
    lowered = await client.patch(
        f"/api/v1/admin/plans/{plan_id}",
        json={"quotas": {"requestsPerMinute": 10}},
        headers=admin.headers,
    )
    assert data_of(lowered)["quotas"]["requestsPerMinute"] == 10
    response = await call(client, secret, app_id, "echo")
    assert response.headers["RateLimit-Policy"] == '"plan";q=10;w=60'
    # Moved onto another plan: its rate at once too.
    await on_plan(client, admin, owner.workspace_id, "small", requestsPerMinute=7)
    response = await call(client, secret, app_id, "echo")
    assert response.headers["RateLimit-Policy"] == '"plan";q=7;w=60'


@pytest.mark.parametrize("quota", ["requestsPerMinute", "concurrentRequests"])
async def test_a_plan_that_allows_no_calls_is_403_not_a_429_to_retry(
    app: FastAPI, client: AsyncClient, quota: str
) -> None:
    """0 calls a minute (or in flight) is a plan's "no", not a busy moment: 403
    `quota_exceeded` naming the quota, with no `Retry-After` that would never lead anywhere."""
    admin = await make_admin(app, client)
    owner = await register(client)
    await on_plan(client, admin, owner.workspace_id, "none", **{quota: 0})
    app_id, secret = await limited_app(client, owner, visibility="public")
    refused = await call(client, secret, app_id, "echo")
    assert assert_error(refused, 403, "quota_exceeded")["quota"] == quota
    assert "Retry-After" not in refused.headers


async def test_a_concurrency_limit_refuses_calls_beyond_the_ones_in_flight(
    upstream_client: tuple[FastAPI, AsyncClient],
) -> None:
    _, client = upstream_client
    owner = await register(client)
    async with slow_upstream() as upstream:
        upstream.gate = asyncio.Event()
        app_id, secret = await limited_app(
            client, owner, upstream.url, apis={"slow": {"concurrent": 2}}
        )
        held = [asyncio.create_task(call(client, secret, app_id, "slow")) for _ in range(2)]
        await upstream.wait_in_flight(2)
        refused = await call(client, secret, app_id, "slow")
        data = assert_error(refused, 429, "too_many_requests")
        assert data == {
            "error": "too_many_requests",
            "limit": "concurrency",
            "scope": "app",
            "max": 2,
            "retryAfter": 1,
        }
        assert refused.headers["Retry-After"] == "1"
        # Set on `slow` alone, the limit leaves the app's other APIs free.
        assert (await call(client, secret, app_id, "echo")).status_code == 200
        upstream.gate.set()
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        # The places were given back: two more calls run at once again.
        again = await asyncio.gather(*(call(client, secret, app_id, "slow") for _ in range(2)))
        assert [r.status_code for r in again] == [200, 200]
        assert upstream.max_in_flight == 2
    metrics = (await client.get("/metrics")).text
    assert (
        metric_value(metrics, "apiforge_limit_rejections_total", kind="concurrency", scope="app")
        >= 1
    )


async def test_a_per_key_concurrency_limit_leaves_other_keys_free(
    upstream_client: tuple[FastAPI, AsyncClient],
) -> None:
    _, client = upstream_client
    owner = await register(client)
    async with slow_upstream() as upstream:
        upstream.gate = asyncio.Event()
        app_id, first = await limited_app(client, owner, upstream.url, concurrentPerKey=1)
        _, second = await create_key(client, owner.headers, type="app", appId=app_id)
        held = asyncio.create_task(call(client, first, app_id, "slow"))
        await upstream.wait_in_flight(1)
        refused = await call(client, first, app_id, "echo")  # app-wide: any API of the app
        assert assert_error(refused, 429, "too_many_requests")["scope"] == "key"
        assert (await call(client, second, app_id, "echo")).status_code == 200
        upstream.gate.set()
        assert (await held).status_code == 200
        assert (await call(client, first, app_id, "echo")).status_code == 200


async def test_the_plan_bounds_calls_in_flight_for_the_calling_workspace(
    upstream_client: tuple[FastAPI, AsyncClient],
) -> None:
    application, client = upstream_client
    admin = await make_admin(application, client)
    owner = await register(client)
    await on_plan(client, admin, owner.workspace_id, "one", concurrentRequests=1)
    async with slow_upstream() as upstream:
        upstream.gate = asyncio.Event()
        app_id, secret = await limited_app(client, owner, upstream.url)
        held = asyncio.create_task(call(client, secret, app_id, "slow"))
        await upstream.wait_in_flight(1)
        refused = await call(client, secret, app_id, "echo")
        assert assert_error(refused, 429, "too_many_requests")["scope"] == "plan"
        upstream.gate.set()
        assert (await held).status_code == 200
        assert (await call(client, secret, app_id, "echo")).status_code == 200


async def test_refused_and_failed_calls_give_their_places_back(
    upstream_client: tuple[FastAPI, AsyncClient],
) -> None:
    application, client = upstream_client
    owner = await register(client)
    app_id, secret = await limited_app(client, owner, concurrent=1)
    for args in ({"text": 5}, {"text": "x" * 500}):  # refused by validation after the stage
        assert (await call(client, secret, app_id, "echo", args)).status_code == 400
    assert (await call(client, secret, app_id, "echo")).status_code == 200
    store = application.state.traffic.store
    if hasattr(store, "active"):
        assert store.active == {}
    else:  # Redis: the last release goes out within milliseconds when no call carries it
        for _ in range(100):
            if await store.in_flight(f"app:{app_id}") == 0:
                break
            await asyncio.sleep(0.01)
        assert await store.in_flight(f"app:{app_id}") == 0


async def test_key_creation_is_rate_limited_per_account(settings: Settings) -> None:
    application = create_app(settings.model_copy(update={"key_creations_per_minute": 2}))
    transport = ASGITransport(app=application, raise_app_exceptions=False)
    try:
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            owner = await register(client)
            app_id, _ = await limited_app(client, owner)  # creates the first key
            await create_key(client, owner.headers, type="app", appId=app_id)
            response = await client.post(
                "/api/v1/api-keys",
                json={"type": "app", "appId": app_id, "name": "third"},
                headers=owner.headers,
            )
            data = assert_error(response, 429, "too_many_requests")
            assert data["limit"] == "key_creation"
            assert 1 <= int(response.headers["Retry-After"]) <= 120
            keys = data_of(await client.get("/api/v1/api-keys", headers=owner.headers))
            assert keys["totalCount"] == 2  # the refused one was not created
            other = await register(client)  # per account: someone else is not affected
            other_app, _ = await limited_app(client, other)
            assert other_app
    finally:
        await shutdown(application)


async def test_anti_duplicate_tokens_are_rate_limited_per_caller(settings: Settings) -> None:
    """Each token is a row (or a Redis key) until spent or expired: a caller mints at most
    `idempotency_tokens_per_minute` a minute; 429 beyond, with the rate-limit headers, and
    nothing issued; another caller is not affected."""
    application = create_app(settings.model_copy(update={"idempotency_tokens_per_minute": 2}))
    transport = ASGITransport(app=application, raise_app_exceptions=False)
    try:
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            owner, other = await register(client), await register(client)
            for _ in range(2):
                data_of(await client.get("/api/v1/idempotency-tokens", headers=owner.headers))
            refused = await client.get("/api/v1/idempotency-tokens", headers=owner.headers)
            data = assert_error(refused, 429, "too_many_requests")
            assert (data["limit"], data["scope"]) == ("idempotency_token", "caller")
            assert refused.headers["RateLimit-Policy"] == '"caller";q=2;w=60'
            assert 1 <= int(refused.headers["Retry-After"]) <= 120
            data_of(await client.get("/api/v1/idempotency-tokens", headers=other.headers))
    finally:
        await shutdown(application)


async def test_calls_waiting_on_a_slow_step_hold_no_pooled_connection(settings: Settings) -> None:
    """Calls whose caches were cold read on their own connection first (and on PostgreSQL
    reserved their charge on it); they give it back before they wait on the upstream, so a pool
    of one (SQLite: two; PostgreSQL: three with its overflow) serves six calls waiting on a slow
    upstream at once (before, the next call waited for a connection until the first call
    ended, its place already taken under the concurrency limit)."""
    pooled = settings.model_copy(update={"http_allow_hosts": ["127.0.0.1"], "db_pool_size": 1})
    application = create_app(pooled)
    transport = ASGITransport(app=application, raise_app_exceptions=False)
    try:
        async with (
            AsyncClient(transport=transport, base_url="http://testserver") as client,
            slow_upstream() as upstream,
        ):
            owner = await register(client)
            upstream.gate = asyncio.Event()
            app_id, secret = await limited_app(client, owner, upstream.url)
            calls = [asyncio.create_task(call(client, secret, app_id, "slow")) for _ in range(6)]
            await upstream.wait_in_flight(6, seconds=5)
            upstream.gate.set()
            assert [r.status_code for r in await asyncio.gather(*calls)] == [200] * 6
    finally:
        await shutdown(application)


async def test_a_keyed_call_waiting_on_an_upstream_stores_its_answer(
    upstream_client: tuple[FastAPI, AsyncClient],
) -> None:
    """A call with an idempotency key whose `httpRequest` step gave its connection back before
    the wait (let_go) still stores its answer, with its charge: the retry replays it, the
    upstream is called once and the call is charged once."""
    _, client = upstream_client
    async with slow_upstream() as upstream:
        owner = await register(client)
        app_id, secret = await limited_app(client, owner, upstream.url)
        await call(client, secret, app_id, "slow")  # warm caches: the claim is the checkout
        served = upstream.served
        headers = {"Idempotency-Key": "wait-once"}
        first = await call(client, secret, app_id, "slow", headers=headers)
        again = await call(client, secret, app_id, "slow", headers=headers)
    assert first.status_code == 200, first.text
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "1"
    assert again.content == first.content
    assert upstream.served == served + 1
    ledger = data_of(await client.get("/api/v1/ledger-entries?pageSize=100", headers=owner.headers))
    calls = [e for e in ledger["list"] if e.get("kind") == "call" and e["amount"] < 0]
    assert len(calls) == 2  # the warm-up and the keyed call, not its replay


async def test_a_cancelled_keyed_call_frees_its_key_and_is_not_charged(
    upstream_client: tuple[FastAPI, AsyncClient],
) -> None:
    """A call cancelled while it waits on its upstream (its client gone, the server stopping)
    failed: its concurrency place and its idempotency key are free at once, nothing of it is
    charged, and the retry with the same key runs (it held the key until its lease ended on
    PostgreSQL: a cancelled call read as a success to the after-stages)."""
    _, client = upstream_client
    async with slow_upstream() as upstream:
        upstream.gate = asyncio.Event()
        owner = await register(client)
        app_id, secret = await limited_app(client, owner, upstream.url, concurrentPerKey=1)
        headers = {"Idempotency-Key": "cancelled"}
        task = asyncio.create_task(call(client, secret, app_id, "slow", headers=headers))
        await upstream.wait_in_flight(1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        upstream.gate.set()
        retry = await call(client, secret, app_id, "slow", headers=headers)
        again = await call(client, secret, app_id, "slow", headers=headers)
    assert retry.status_code == 200, retry.text
    assert "Idempotent-Replayed" not in retry.headers
    assert again.headers["Idempotent-Replayed"] == "1"
    ledger = data_of(await client.get("/api/v1/ledger-entries?pageSize=100", headers=owner.headers))
    calls = [e for e in ledger["list"] if e.get("kind") == "call" and e["amount"] < 0]
    assert len(calls) == 1  # the retry alone
