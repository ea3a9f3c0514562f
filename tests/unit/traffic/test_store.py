"""The counters' stores, in process and on Redis (a redis-server of the test's own), held to the
same rules: all-or-nothing admission over rates and slots, sliding windows, releases, leases
that expire, and the 429s the control raises."""

import asyncio
import time

import pytest

from apiforge.core.errors import ApiforgeError
from apiforge.core.settings import Settings
from apiforge.core.shared import make_redis
from apiforge.traffic.concurrency import Slot, new_member
from apiforge.traffic.control import TrafficControl
from apiforge.traffic.frequency import Rate
from apiforge.traffic.store import RedisTraffic, TrafficStore
from tests.e2e._traffic import redis_server


async def test_slots_are_taken_in_every_counter_or_in_none(store: TrafficStore) -> None:
    wide, narrow = Slot("app", "a", 3), Slot("key", "k", 1)
    first = new_member()
    assert await store.admit([], [wide, narrow], first) is None
    refused = await store.admit([], [wide, narrow], new_member())
    assert refused is not None
    assert (refused.kind, refused.scope, refused.limit) == ("concurrency", "key", 1)
    # `narrow` refused the call, so it took no place in `wide` either: two more fit there.
    assert await store.admit([], [wide], new_member()) is None
    assert await store.admit([], [wide], new_member()) is None
    assert await store.admit([], [wide], new_member()) is not None
    await store.release([wide, narrow], first)
    assert await store.admit([], [wide, narrow], new_member()) is None


async def test_a_refused_call_counts_in_no_window(store: TrafficStore) -> None:
    loose, tight = Rate("plan", "p", 100, 60), Rate("key", "k", 2, 60)
    for _ in range(2):
        assert await store.admit([loose, tight], [], "") is None
    for _ in range(5):
        refused = await store.admit([loose, tight], [], "")
        assert refused is not None
        assert refused.rate == tight
        assert 0 < refused.retry_after_ms <= 120_000
    # `loose` counted only the two admitted calls: 98 more fit in it alone.
    for _ in range(98):
        assert await store.admit([loose], [], "") is None
    assert await store.admit([loose], [], "") is not None


async def test_a_full_slot_refuses_without_counting_the_rate(store: TrafficStore) -> None:
    rate, slot = Rate("key", "r", 3, 60), Slot("app", "s", 1)
    held = new_member()
    assert await store.admit([rate], [slot], held) is None
    refused = await store.admit([rate], [slot], new_member())
    assert refused is not None
    assert refused.kind == "concurrency"
    await store.release([slot], held)
    assert await store.admit([rate], [], "") is None
    assert await store.admit([rate], [], "") is None  # 3 in all: the refused one didn't count
    assert await store.admit([rate], [], "") is not None


async def test_many_concurrent_admissions_never_overshoot(store: TrafficStore) -> None:
    slot, rate = Slot("app", "burst", 10), Rate("key", "burst", 25, 60)
    slotted = await asyncio.gather(*(store.admit([], [slot], new_member()) for _ in range(200)))
    assert sum(result is None for result in slotted) == 10
    counted = await asyncio.gather(*(store.admit([rate], [], "") for _ in range(200)))
    assert sum(result is None for result in counted) == 25


async def _next_window(store: TrafficStore) -> None:
    """Sleep until just after the store's clock starts a new second (Redis's clock, or this
    process's monotonic one): calls made then all fall in one 1 s window."""
    if isinstance(store, RedisTraffic):
        seconds, micros = await store.redis.time()
        now = seconds + micros / 1_000_000
    else:
        now = time.monotonic()
    await asyncio.sleep(1 - now % 1 + 0.01)


async def test_the_window_slides(store: TrafficStore) -> None:
    """A 1 s window: full now, one call fits again once the previous window's weight decays.
    The burst starts as a window does: one straddling a window's end counts against two, and
    with one call before the end only three fitted (the test failed now and then)."""
    rate = Rate("ip", "slide", 4, 1)
    await _next_window(store)
    admitted = 0
    while await store.admit([rate], [], "") is None:
        admitted += 1
    assert admitted == 4
    refused = await store.admit([rate], [], "")
    assert refused is not None
    assert refused.retry_after_ms <= 2000
    await asyncio.sleep(refused.retry_after_ms / 1000 + 0.05)
    assert await store.admit([rate], [], "") is None


async def test_redis_leases_expire_when_never_released() -> None:
    async with redis_server() as server:
        client = make_redis(Settings(redis_url=server.url))
        assert client is not None
        try:
            store = RedisTraffic(client, "t:", lease_seconds=1)
            slot = Slot("app", "leak", 1)
            assert await store.admit([], [slot], new_member()) is None  # a crash: no release
            assert await store.in_flight("leak") == 1
            assert await store.admit([], [slot], new_member()) is not None
            await asyncio.sleep(1.1)
            assert await store.in_flight("leak") == 0
            assert await store.admit([], [slot], new_member()) is None
            assert await client.pttl("t:conc:leak") > 0  # the set expires with its last lease
        finally:
            await store.close()
            await client.aclose()


async def test_redis_releases_ride_along_or_go_alone_within_milliseconds() -> None:
    async with redis_server() as server:
        client = make_redis(Settings(redis_url=server.url))
        assert client is not None
        try:
            store = RedisTraffic(client, "t:", lease_seconds=60)
            slot = Slot("app", "ride", 1)
            first = new_member()
            assert await store.admit([], [slot], first) is None
            await store.release([slot], first)
            # The next admission carries the release: the slot has room again at once.
            second = new_member()
            assert await store.admit([], [slot], second) is None
            assert store.pending == []
            await store.release([slot], second)
            await asyncio.sleep(0.05)  # nothing else comes: the release went out alone
            assert await store.in_flight("ride") == 0
            third = new_member()
            assert await store.admit([], [slot], third) is None
            await store.release([slot], third)
            await store.close()  # at shutdown, pending releases are sent
            assert await store.in_flight("ride") == 0
        finally:
            await client.aclose()


async def test_a_release_sent_alone_is_applied_before_the_next_admission() -> None:
    """A release on its way alone (the flush) is sent over the admissions' line, so the call
    admitted right after it finds the place free: over another connection, the admission could
    reach Redis first and be refused a place that had been given back."""
    async with redis_server() as server:
        client = make_redis(Settings(redis_url=server.url))
        assert client is not None
        store = RedisTraffic(client, "t:", lease_seconds=60)
        try:
            slot = Slot("key", "order", 1)
            for _ in range(20):
                member = new_member()
                assert await store.admit([], [slot], member) is None
                await store.release([slot], member)
                flushing = asyncio.create_task(store.flush())
                await asyncio.sleep(0)  # the flush has taken the release and sent it
                assert store.pending == []
                last = new_member()
                assert await store.admit([], [slot], last) is None
                await flushing
                await store.release([slot], last)
                await store.flush()
        finally:
            await store.close()
            await client.aclose()


def test_lease_members_are_unique() -> None:
    assert len({new_member() for _ in range(10_000)}) == 10_000


async def test_the_control_raises_429_with_the_limits_headers(settings: Settings) -> None:
    control = TrafficControl(settings, None)
    slot = Slot("plan", "ws", 1)
    assert await control.admit([], [slot], new_member()) is True
    with pytest.raises(ApiforgeError) as refused:
        await control.admit([], [slot], new_member())
    assert (refused.value.status, refused.value.reason) == (429, "too_many_requests")
    assert refused.value.headers == {"Retry-After": "1"}
    assert refused.value.details == {
        "limit": "concurrency",
        "scope": "plan",
        "max": 1,
        "retryAfter": 1,
    }
    rates = [Rate("key", "k", 1, 60), Rate("plan", "p", 600, 60)]
    assert await control.admit(rates, [], "") is True
    with pytest.raises(ApiforgeError) as limited:
        await control.admit(rates, [], "")
    retry = int(limited.value.headers["Retry-After"])
    # A limit of 1 waits for the previous window's weight to vanish: up to two windows.
    assert 1 <= retry <= 120
    assert limited.value.headers == {
        "Retry-After": str(retry),
        "RateLimit-Policy": '"key";q=1;w=60, "plan";q=600;w=60',
        "RateLimit": f'"key";r=0;t={retry}',
        "X-RateLimit-Limit": "1",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(retry),
    }


async def test_an_admission_cancelled_in_flight_gives_its_places_back() -> None:
    """A client that goes away while its admission is on the wire: the script may run all the
    same, and its place must not wait for the lease to expire."""
    async with redis_server() as server:
        client = make_redis(Settings(redis_url=server.url))
        assert client is not None
        store = RedisTraffic(client, "t:", lease_seconds=60)
        try:
            slot = Slot("app", "gone", 5)
            assert await store.admit([], [slot], new_member()) is None  # connected
            assert await store.in_flight("gone") == 1
            for _ in range(3):
                admission = asyncio.ensure_future(store.admit([], [slot], new_member()))
                await asyncio.sleep(0)  # the script is on its way
                admission.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await admission
            # No later call carries the releases: they go alone, within the release delay.
            for _ in range(100):
                if await store.in_flight("gone") == 1:
                    break
                await asyncio.sleep(0.01)
            assert await store.in_flight("gone") == 1  # only the first call's place
        finally:
            await store.close()
            await client.aclose()
