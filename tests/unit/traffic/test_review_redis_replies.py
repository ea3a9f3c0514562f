"""Error replies from a Redis that is up (a key of another type under the prefix): one bad key
costs only its own calls, never every admission of the process from then on."""

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from apiforge.core.settings import Settings
from apiforge.core.shared import make_redis
from apiforge.traffic.concurrency import Slot, new_member
from apiforge.traffic.frequency import Rate
from apiforge.traffic.store import RedisTraffic
from tests.e2e._traffic import redis_server


@pytest.fixture(params=["line", "redis-py"])
async def traffic(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RedisTraffic, Redis]]:
    async with redis_server() as server:
        client = make_redis(Settings(redis_url=server.url))
        assert client is not None
        store = RedisTraffic(client, "t:", lease_seconds=60)
        if request.param == "redis-py":
            assert store.line is not None
            await store.line.close()
            store.line = None
        try:
            yield store, client
        finally:
            await store.close()
            await client.aclose()


async def test_a_release_to_a_key_of_another_type_does_not_fail_later_admissions(
    traffic: tuple[RedisTraffic, Redis],
) -> None:
    store, client = traffic
    slot, member = Slot("key", "held", 5), new_member()
    assert await store.admit([], [slot], member) is None
    await client.set("t:conc:held", "not a sorted set")  # WRONGTYPE for the release
    await store.release([slot], member)
    other = Rate("key", "other", 10, 60)
    assert await store.admit([other], [], new_member()) is None  # carries the release
    assert store.pending == []
    assert await store.admit([other], [], new_member()) is None


async def test_a_release_sent_alone_to_a_key_of_another_type_is_not_kept(
    traffic: tuple[RedisTraffic, Redis],
) -> None:
    store, client = traffic
    slot, member = Slot("key", "held", 5), new_member()
    assert await store.admit([], [slot], member) is None
    await client.set("t:conc:held", "not a sorted set")
    store.pending.append(("t:conc:held", member))
    await store.flush()
    assert store.pending == []  # not retried every second for ever
    assert store.flush_timer is None
