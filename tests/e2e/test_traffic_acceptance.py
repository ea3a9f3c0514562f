"""Issue 6's traffic acceptance, for real: two apiforge processes sharing a redis-server of the
test's own. Calls in flight are measured inside the API, by the upstream its steps call."""

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import cast

import httpx
import pytest
import redis.asyncio as aioredis

from apiforge.core.settings import MIN_LEASE_SECONDS, Settings
from tests._servers import running_servers
from tests.e2e._keys import call
from tests.e2e._traffic import (
    RedisServer,
    SlowUpstream,
    limited_app,
    metric_value,
    redis_server,
    slow_upstream,
)
from tests.e2e._workspaces import assert_error
from tests.factories import register

LEASE_SECONDS = MIN_LEASE_SECONDS  # the shortest a server accepts (longer than any call)
RELEASE_SECONDS = 4  # places given back by calls that end come back well within this
DEGRADED = "apiforge_limit_degraded_total"
# Idle connections are dropped well before uvicorn's 5 s keep-alive ends: reusing one just as
# the server closes it fails the request ("Server disconnected"), a race of the harness.
MANY = httpx.Limits(max_connections=400, max_keepalive_connections=400, keepalive_expiry=2.0)


@pytest.fixture
async def redis_own() -> AsyncIterator[RedisServer]:
    async with redis_server() as server:
        yield server


def _settings(settings: Settings, redis: RedisServer) -> Settings:
    return settings.model_copy(
        update={
            "redis_url": redis.url,
            "redis_prefix": "acc:",
            "http_allow_hosts": ["127.0.0.1"],
            "traffic_lease_seconds": LEASE_SECONDS,
        }
    )


async def _leases(redis: RedisServer) -> int:
    """Live concurrency leases in Redis, over every counter."""
    client = aioredis.Redis.from_url(redis.url)
    try:
        seconds, micros = await client.time()
        now = seconds * 1000 + micros // 1000
        total = 0
        async for key in client.scan_iter(match="acc:conc:*"):
            total += int(await client.zcount(key, f"({now}", "+inf"))
        return total
    finally:
        await client.aclose()


async def _redis_clock(redis: RedisServer) -> float:
    """Redis's clock (the one the admission script times windows by), in Unix seconds."""
    client = aioredis.Redis.from_url(redis.url)
    try:
        seconds, micros = await client.time()
        return seconds + micros / 1_000_000
    finally:
        await client.aclose()


async def _minute_with_room(redis: RedisServer, seconds: float) -> int:
    """Wait, if need be, until at least `seconds` are left of Redis's current minute; answers
    that minute's number. A burst that straddles a minute's end is counted against two windows
    by the sliding-window counter and may pass 49 or 53+ calls of a limit of 50 (see
    docs/traffic.md), whatever the servers do."""
    now = await _redis_clock(redis)
    left = 60 - now % 60
    if left < seconds:
        await asyncio.sleep(left + 0.05)
        now = await _redis_clock(redis)
    return int(now // 60)


async def _age_leases(redis: RedisServer, seconds: int) -> None:
    """Check every live lease ends `LEASE_SECONDS` after it was taken (within the few seconds
    the test has run), then bring its end `seconds` closer: time passing, sooner."""
    client = aioredis.Redis.from_url(redis.url)
    try:
        now_s, micros = await client.time()
        now = now_s * 1000 + micros // 1000
        async for key in client.scan_iter(match="acc:conc:*"):
            found = await client.zrange(key, 0, -1, withscores=True)
            for member, score in cast(list[tuple[bytes, float]], found):
                left = score - now
                assert 0 < left <= LEASE_SECONDS * 1000, (left, LEASE_SECONDS)
                assert left > (LEASE_SECONDS - 10) * 1000  # not a shorter lease
                await client.zincrby(key, -seconds * 1000, member)
    finally:
        await client.aclose()


async def _until_no_leases(redis: RedisServer, seconds: float) -> float:
    started = time.monotonic()
    while await _leases(redis):
        assert time.monotonic() - started < seconds, "leases still held"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _call(client: httpx.AsyncClient, secret: str, app_id: str, api: str) -> httpx.Response:
    """One call; a connection the loaded machine failed to open is opened again (the call never
    reached the server, so retrying it changes nothing that is measured)."""
    for attempt in range(3):
        try:
            return await call(client, secret, app_id, api)
        except httpx.ConnectError:
            if attempt == 2:
                raise
            await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


async def _burst(
    clients: list[httpx.AsyncClient], secret: str, app_id: str, api: str, n: int
) -> Counter[int]:
    responses = await asyncio.gather(
        *(_call(clients[i % len(clients)], secret, app_id, api) for i in range(n))
    )
    return Counter(r.status_code for r in responses)


async def test_two_processes_never_run_more_calls_than_the_concurrency_limit(
    settings: Settings, redis_own: RedisServer
) -> None:
    async with (
        slow_upstream(delay=1.0) as upstream,
        running_servers(_settings(settings, redis_own)) as urls,
        httpx.AsyncClient(base_url=urls[0], timeout=60, limits=MANY) as first,
        httpx.AsyncClient(base_url=urls[1], timeout=60, limits=MANY) as second,
    ):
        owner = await register(first)
        app_id, secret = await limited_app(
            first, owner, upstream.url, apis={"slow": {"concurrent": 10}}
        )
        statuses = await _burst([first, second], secret, app_id, "slow", 200)
        assert set(statuses) <= {200, 429}, statuses
        assert statuses[200] >= 10
        assert statuses[429] >= 100  # 200 calls of 1 s arrive well within a second or two
        assert upstream.max_in_flight <= 10
        assert await _leases(redis_own) == 0  # every place given back at the end of its call

        # Clients that give up mid-call: the calls finish server-side, then release.
        upstream.delay = 1.5
        upstream.max_in_flight = 0
        async with (
            httpx.AsyncClient(base_url=urls[0], timeout=0.8, limits=MANY) as impatient_a,
            httpx.AsyncClient(base_url=urls[1], timeout=0.8, limits=MANY) as impatient_b,
        ):
            gone = await asyncio.gather(
                *(
                    call([impatient_a, impatient_b][i % 2], secret, app_id, "slow")
                    for i in range(40)
                ),
                return_exceptions=True,
            )
        assert sum(isinstance(r, httpx.TimeoutException) for r in gone) >= 10
        await upstream.wait_in_flight(10, seconds=5)
        waited = await _until_no_leases(redis_own, RELEASE_SECONDS)
        assert waited < RELEASE_SECONDS  # released, not expired
        assert upstream.max_in_flight <= 10
        assert (await call(first, secret, app_id, "slow")).status_code == 200

        metrics = (await first.get("/metrics")).text + (await second.get("/metrics")).text
        assert "apiforge_limit_rejections_total" in metrics


async def test_leases_of_a_crashed_process_expire(
    settings: Settings, redis_own: RedisServer
) -> None:
    upstream = SlowUpstream(delay=30)
    await upstream.start()
    try:
        async with (
            running_servers(_settings(settings, redis_own)) as urls,
            httpx.AsyncClient(base_url=urls[0], timeout=60) as survivor,
            httpx.AsyncClient(base_url=urls[1], timeout=60) as doomed,
        ):
            owner = await register(survivor)
            app_id, secret = await limited_app(
                survivor, owner, upstream.url, apis={"slow": {"concurrent": 3}}
            )
            calls = [asyncio.create_task(call(doomed, secret, app_id, "slow")) for _ in range(3)]
            await upstream.wait_in_flight(3)
            assert await _leases(redis_own) == 3 * 2  # the API's counter and the plan's
            urls.kill(1)  # SIGKILL mid-call: its `finally` never runs, its leases leak
            refused = await call(survivor, secret, app_id, "slow")
            assert_error(refused, 429, "too_many_requests")
            # Each leaked lease ends LEASE_SECONDS after its call was admitted (Redis's clock).
            # Waiting that long would take a minute: the leases are aged by all but a second.
            await _age_leases(redis_own, LEASE_SECONDS - 1)
            waited = await _until_no_leases(redis_own, 3)
            assert waited <= 1.5
            upstream.delay = 0
            assert (await call(survivor, secret, app_id, "slow")).status_code == 200
            for task in calls:
                assert isinstance(
                    (await asyncio.gather(task, return_exceptions=True))[0], Exception
                )
    finally:
        await upstream.stop()


async def test_a_frequency_limit_of_50_a_minute_holds_across_two_processes(
    settings: Settings, redis_own: RedisServer
) -> None:
    async with (
        running_servers(_settings(settings, redis_own)) as urls,
        httpx.AsyncClient(base_url=urls[0], timeout=60, limits=MANY) as first,
        httpx.AsyncClient(base_url=urls[1], timeout=60, limits=MANY) as second,
    ):
        owner = await register(first)
        app_id, secret = await limited_app(first, owner, apis={"echo": {"keyPerMinute": 50}})
        # 500 calls, 8 at a time over both processes (the free plan allows 10 in flight, and a
        # call refused for concurrency would still have counted in the window).
        statuses: Counter[int] = Counter()
        scopes: Counter[str] = Counter()
        minute = await _minute_with_room(redis_own, 20)
        started = time.monotonic()
        for _ in range(500 // 8 + 1):
            responses = await asyncio.gather(
                *(call((first, second)[i % 2], secret, app_id, "echo") for i in range(8))
            )
            for response in responses[: 500 - sum(statuses.values())]:
                statuses[response.status_code] += 1
                if response.status_code == 429:
                    scopes[response.json()["data"]["scope"]] += 1
        assert time.monotonic() - started < 60
        assert int(await _redis_clock(redis_own) // 60) == minute, "the burst outran its minute"
        assert sum(statuses.values()) == 500
        assert set(statuses) <= {200, 429}, statuses
        assert set(scopes) == {"key"}, scopes
        assert statuses[200] == 50, statuses  # one window, one atomic script per call


async def test_redis_killed_mid_run_each_limit_follows_its_mode_and_recovers(
    settings: Settings, redis_own: RedisServer
) -> None:
    shared = _settings(settings, redis_own)
    async with (
        running_servers(shared, count=1) as open_urls,
        running_servers(
            shared, count=1, extra_env={"APIFORGE_TRAFFIC_CONCURRENCY_FAILURE": "closed"}
        ) as closed_urls,
        httpx.AsyncClient(base_url=open_urls[0], timeout=60, limits=MANY) as lenient,
        httpx.AsyncClient(base_url=closed_urls[0], timeout=60, limits=MANY) as strict,
    ):
        owner = await register(lenient)
        app_id, secret = await limited_app(lenient, owner, apis={"echo": {"keyPerMinute": 30}})
        assert await _burst([lenient, strict], secret, app_id, "echo", 10) == {200: 10}

        await redis_own.stop()
        down_open = await _burst([lenient], secret, app_id, "echo", 40)
        down_closed = await _burst([strict], secret, app_id, "echo", 10)
        assert down_open == {200: 40}  # over the key limit of 30: nothing could count
        assert down_closed == {503: 10}
        refused = await call(strict, secret, app_id, "echo")
        assert_error(refused, 503, "limits_unavailable")
        # Frequency fails open on both; concurrency open on one, closed on the other.
        for urls, kind, mode in (
            (open_urls, "frequency", "open"),
            (open_urls, "concurrency", "open"),
            (closed_urls, "frequency", "open"),
            (closed_urls, "concurrency", "closed"),
        ):
            async with httpx.AsyncClient(base_url=urls[0]) as http:
                metrics = (await http.get("/metrics")).text
            assert metric_value(metrics, DEGRADED, kind=kind, mode=mode) > 0, (kind, mode)
        assert '"event":"traffic store unavailable"' in open_urls.output(0)

        await redis_own.start()  # empty: the windows start again
        deadline = time.monotonic() + 15
        while True:
            statuses = await _burst([lenient, strict], secret, app_id, "echo", 2)
            if statuses == {200: 2}:
                break
            assert set(statuses) <= {200, 503}, statuses
            assert time.monotonic() < deadline, "no recovery"
            await asyncio.sleep(0.2)
        # Limits count again once Redis is back: the key limit of 30 refuses the rest.
        statuses, scopes = Counter[int](), Counter[str]()
        for _ in range(8):
            responses = await asyncio.gather(
                *(_call((lenient, strict)[i % 2], secret, app_id, "echo") for i in range(5))
            )
            statuses.update(r.status_code for r in responses)
            scopes.update(r.json()["data"]["scope"] for r in responses if r.status_code == 429)
        assert set(statuses) == {200, 429}, statuses
        assert statuses[200] <= 30
        assert set(scopes) == {"key"}, scopes
        assert '"event":"traffic store recovered"' in open_urls.output(0)
