"""At start, a Redis that may evict keys (a memory limit with a policy other than `noeviction`)
is named in the log: evicted nonces, leases and windows break their guarantees quietly. Silent
for `noeviction`, for no memory limit, and for a Redis that refuses `CONFIG` (managed ones)."""

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from structlog.testing import capture_logs

from apiforge.system.health import warn_if_redis_evicts
from tests.e2e._traffic import redis_client


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    async with redis_client() as client:
        yield client


async def _warnings(client: Redis | None) -> list[str]:
    with capture_logs() as logs:
        await warn_if_redis_evicts(client)
    return [entry["event"] for entry in logs]


async def test_an_evicting_redis_is_named_at_start(redis: Redis) -> None:
    await redis.config_set("maxmemory", "100mb")
    await redis.config_set("maxmemory-policy", "allkeys-lru")
    assert await _warnings(redis) == ["redis_may_evict"]
    await redis.config_set("maxmemory-policy", "volatile-ttl")  # every key of ours has a TTL
    assert await _warnings(redis) == ["redis_may_evict"]


async def test_a_redis_that_cannot_evict_is_not(redis: Redis) -> None:
    await redis.config_set("maxmemory-policy", "allkeys-lru")
    assert await _warnings(redis) == []  # no memory limit: nothing is evicted
    await redis.config_set("maxmemory", "100mb")
    await redis.config_set("maxmemory-policy", "noeviction")
    assert await _warnings(redis) == []
    assert await _warnings(None) == []


async def test_a_redis_refusing_config_is_left_alone(redis: Redis) -> None:
    await redis.config_set("maxmemory", "100mb")
    await redis.config_set("maxmemory-policy", "allkeys-lru")
    await redis.acl_setuser(
        "app", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-config"]
    )
    limited = Redis(
        host=redis.connection_pool.connection_kwargs["host"],
        port=redis.connection_pool.connection_kwargs["port"],
        username="app",
        password="pw",
    )
    try:
        assert await limited.ping()  # signed in: only CONFIG is refused
        assert await _warnings(limited) == []
    finally:
        await limited.aclose()
