"""The frequency counters against the clock: `Retry-After` when several rates are full, the
in-process windows when the wall clock is set back, and the exact instants around a window's
end (in process, on a clock the test moves)."""

import pytest

from apiforge.traffic import store as traffic_store
from apiforge.traffic.frequency import Rate
from apiforge.traffic.store import MemoryTraffic, TrafficStore


class _Clock:
    """Stands in for the `time` module of the traffic store: a wall clock and a monotonic clock
    the test moves apart or together."""

    def __init__(self) -> None:
        self.wall = 1_800_000_000.0  # whole minutes, like `mono`
        self.mono = 6_000.0

    def time(self) -> float:
        return self.wall

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


async def test_retry_after_waits_for_the_slowest_of_several_full_rates(
    store: TrafficStore,
) -> None:
    """A call over a per-second rate and a per-minute rate at once: `Retry-After` used to come
    from the first full rate (about 2 s here), so the retry met the per-minute rate, still full
    for about two minutes, and was refused again. It names the longest wait now."""
    short, long = Rate("ip", "ip:a:x:1", 1, 1), Rate("key", "key:a:x:k", 1, 60)
    assert await store.admit([short, long], [], "") is None
    refused = await store.admit([short, long], [], "")
    assert refused is not None
    assert refused.rate == long
    # The 60 s rate is full until its only call has left the sliding window: over a minute.
    assert 60_000 < refused.retry_after_ms <= 120_000


async def test_a_wall_clock_set_back_leaves_the_in_process_windows_turning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An NTP step back by an hour put every in-process counter in a window "from the future"
    that never turned until the wall clock caught up: a key at its 3-a-minute rate was refused
    for the whole hour, each 429 saying to retry within two minutes. The windows follow the
    monotonic clock now, which no one sets."""
    clock = _Clock()
    monkeypatch.setattr(traffic_store, "time", clock)
    store = MemoryTraffic()
    rate = Rate("key", "key:a:x:k", 3, 60)
    for _ in range(3):
        assert await store.admit([rate], [], "") is None
    assert await store.admit([rate], [], "") is not None
    clock.wall -= 3600  # the step back
    clock.advance(120)  # two minutes pass: both windows are over
    assert await store.admit([rate], [], "") is None


async def test_a_full_window_ends_exactly_when_retry_after_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """50 calls in the last millisecond of a window: right after its end they still weigh 50
    and the 51st is refused; the wait it gives is right to the millisecond (a call a millisecond
    before its end is refused, one a millisecond after is admitted)."""
    clock = _Clock()  # both clocks stand at the start of a 60 s window
    monkeypatch.setattr(traffic_store, "time", clock)
    store = MemoryTraffic()
    rate = Rate("key", "key:a:x:k", 50, 60)
    clock.advance(59.999)  # the window's last millisecond
    for _ in range(50):
        assert await store.admit([rate], [], "") is None
    clock.advance(0.001)  # the boundary: the previous window's 50 weigh in full
    refused = await store.admit([rate], [], "")
    assert refused is not None
    # One call fits once 50 * (1 - elapsed / 60 s) <= 49: 1.2 s into the window.
    assert refused.retry_after_ms == pytest.approx(1_200.0, abs=0.01)
    clock.advance(1.199)
    assert await store.admit([rate], [], "") is not None
    clock.advance(0.002)
    assert await store.admit([rate], [], "") is None
    assert await store.admit([rate], [], "") is not None  # about 49 + 1 weighs 50 again
