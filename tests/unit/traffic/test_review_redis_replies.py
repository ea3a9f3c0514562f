"""Error replies from a Redis that is up (a key of another type under the prefix): one bad key
costs only its own calls, never every admission of the process from then on."""

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from apiforge.traffic.concurrency import Slot, new_member
from apiforge.traffic.frequency import Rate
from apiforge.traffic.store import RedisTraffic
from tests.unit.traffic.conftest import redis_traffic


@pytest.fixture(params=["redis", "redis-py"])
async def traffic(request: pytest.FixtureRequest) -> AsyncIterator[tuple[RedisTraffic, Redis]]:
    async with redis_traffic(request.param) as pair:
        yield pair


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
