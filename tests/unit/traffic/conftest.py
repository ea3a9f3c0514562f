"""The counters' stores the traffic tests run against: in process, and on a redis-server of the
test's own over both of `RedisTraffic`'s lines."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from redis.asyncio import Redis

from apiforge.core.settings import Settings
from apiforge.core.shared import make_redis
from apiforge.traffic.store import MemoryTraffic, RedisTraffic, TrafficStore
from tests.e2e._traffic import redis_server


@asynccontextmanager
async def redis_traffic(line: str) -> AsyncIterator[tuple[RedisTraffic, Redis]]:
    """A `RedisTraffic` on a redis-server of its own, and its client. `line`: "redis" admits
    over the lean line, "redis-py" over redis-py's script (as with TLS)."""
    async with redis_server() as server:
        client = make_redis(Settings(redis_url=server.url))
        assert client is not None
        traffic = RedisTraffic(client, "t:", lease_seconds=60)
        if line == "redis-py":
            assert traffic.line is not None
            await traffic.line.close()
            traffic.line = None
        try:
            yield traffic, client
        finally:
            await traffic.close()
            await client.aclose()


@pytest.fixture(params=["memory", "redis", "redis-py"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[TrafficStore]:
    if request.param == "memory":
        yield MemoryTraffic()
        return
    async with redis_traffic(request.param) as (traffic, _client):
        yield traffic
