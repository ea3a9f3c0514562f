"""The in-process counters stay bounded under ever new client addresses: counters of windows that
are over are pruned (the map holds at most twice the live ones), refused calls store nothing, and
a concurrency place given back leaves no entry behind."""

import types

import pytest

from apiforge.traffic import store as store_module
from apiforge.traffic.concurrency import Slot
from apiforge.traffic.frequency import Rate
from apiforge.traffic.store import MemoryTraffic

WINDOW = 60
PER_MINUTE = 5_000  # new client addresses a minute
MINUTES = 10


class FakeTime:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    clock = FakeTime()
    monkeypatch.setattr(
        store_module, "time", types.SimpleNamespace(time=clock.time, monotonic=clock.time)
    )
    monkeypatch.setattr(store_module, "PRUNE_AT", 1_000)
    return clock


async def test_counters_of_ever_new_addresses_are_pruned(fake_time: FakeTime) -> None:
    traffic = MemoryTraffic()
    largest = 0
    for minute in range(MINUTES):
        for n in range(PER_MINUTE):
            fake_time.now += WINDOW / PER_MINUTE
            rate = Rate("ip", f"ip:app:api:10.{minute}.{n // 256}.{n % 256}", 10, WINDOW)
            assert await traffic.admit([rate], [], "") is None
            largest = max(largest, len(traffic.windows))
    # Live: this window's and the last two's (a counter lives until both its windows are over).
    assert largest <= 2 * 3 * PER_MINUTE + 1, largest
    assert largest < MINUTES * PER_MINUTE


async def test_refused_calls_and_released_places_leave_nothing(fake_time: FakeTime) -> None:
    traffic = MemoryTraffic()
    full = Slot("app", "app:busy", 1)
    assert await traffic.admit([], [full], "") is None
    for n in range(20_000):
        rate = Rate("ip", f"ip:app:api:{n}", 10, WINDOW)
        assert await traffic.admit([rate], [full], "") is not None  # refused by the slot
    assert traffic.windows == {}
    await traffic.release([full], "")
    for n in range(20_000):
        slot = Slot("key", f"key:1:caller-{n}", 5)
        assert await traffic.admit([], [slot], "") is None
        await traffic.release([slot], "")
    assert traffic.active == {}
