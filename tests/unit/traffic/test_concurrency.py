"""Concurrency stores: the same rule in process and on Redis (a redis-server of the test's own):
all-or-nothing acquire, release, leases that expire, and the 429 the control raises."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from limits.aio.storage import MemoryStorage

from apiforge.core.errors import ApiforgeError
from apiforge.core.settings import Settings
from apiforge.core.shared import make_redis
from apiforge.traffic.concurrency import (
    ConcurrencyStore,
    MemoryConcurrency,
    RedisConcurrency,
    Slot,
    new_member,
)
from apiforge.traffic.control import TrafficControl
from tests.e2e._traffic import redis_server


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[ConcurrencyStore]:
    if request.param == "memory":
        yield MemoryConcurrency()
        return
    async with redis_server() as server:
        client = make_redis(Settings(redis_url=server.url))
        assert client is not None
        try:
            yield RedisConcurrency(client, "t:", lease_seconds=60)
        finally:
            await client.aclose()


async def test_acquire_takes_a_place_in_every_slot_or_in_none(store: ConcurrencyStore) -> None:
    wide, narrow = Slot("app", "a", 3), Slot("key", "k", 1)
    first = new_member()
    assert await store.acquire([wide, narrow], first) is None
    # `narrow` is full: the call is refused and takes no place in `wide` either.
    assert await store.acquire([wide, narrow], new_member()) == narrow
    assert await store.acquire([wide], new_member()) is None
    assert await store.acquire([wide], new_member()) is None
    assert await store.acquire([wide], new_member()) == wide  # 3 taken: first + two
    await store.release([wide, narrow], first)
    assert await store.acquire([wide, narrow], new_member()) is None


async def test_releasing_twice_or_an_unknown_member_frees_nothing_extra() -> None:
    store = MemoryConcurrency()
    slot = Slot("app", "a", 1)
    member = new_member()
    assert await store.acquire([slot], member) is None
    await store.release([slot], member)
    await store.release([slot], member)  # a stray release must not make room below zero
    assert store.active == {}
    assert await store.acquire([slot], new_member()) is None
    assert await store.acquire([slot], new_member()) == slot


async def test_many_concurrent_acquires_never_overshoot(store: ConcurrencyStore) -> None:
    slot = Slot("app", "burst", 10)
    results = await asyncio.gather(*(store.acquire([slot], new_member()) for _ in range(200)))
    assert sum(result is None for result in results) == 10


async def test_redis_leases_expire_when_never_released() -> None:
    async with redis_server() as server:
        client = make_redis(Settings(redis_url=server.url))
        assert client is not None
        try:
            store = RedisConcurrency(client, "t:", lease_seconds=1)
            slot = Slot("app", "leak", 1)
            assert await store.acquire([slot], new_member()) is None  # never released: a crash
            assert await store.in_flight("leak") == 1
            assert await store.acquire([slot], new_member()) == slot
            await asyncio.sleep(1.1)
            assert await store.in_flight("leak") == 0
            assert await store.acquire([slot], new_member()) is None
            assert await client.pttl("t:conc:leak") > 0  # the set itself expires with its leases
        finally:
            await client.aclose()


def test_members_are_unique() -> None:
    assert len({new_member() for _ in range(10_000)}) == 10_000


async def test_the_control_refuses_with_429_and_retry_after(settings: Settings) -> None:
    control = TrafficControl(settings, None, MemoryStorage())
    slot = Slot("plan", "ws", 1)
    assert await control.acquire([slot], new_member()) is True
    with pytest.raises(ApiforgeError) as refused:
        await control.acquire([slot], new_member())
    assert refused.value.status == 429
    assert refused.value.reason == "too_many_requests"
    assert refused.value.headers == {"Retry-After": "1"}
    assert refused.value.details == {
        "limit": "concurrency",
        "scope": "plan",
        "max": 1,
        "retryAfter": 1,
    }
