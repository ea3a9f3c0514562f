"""The in-process counters have a hard cap: a flood from ever new addresses within one window
(IPv6 /64s, a trusted proxy's `X-Forwarded-For`) no longer grows them without bound, and the
counters forgotten at the cap are the least recently used — never a busy one, and a client's
own full counter only after far more calls than it would win back."""

import types

import pytest

from apiforge.traffic import store as store_module
from apiforge.traffic.frequency import Rate
from apiforge.traffic.store import MemoryTraffic

WINDOW = 60
CAP = 100


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """One instant: every counter is live, so only the cap can forget one."""
    clock = types.SimpleNamespace(time=lambda: 1_000.0, monotonic=lambda: 1_000.0)
    monkeypatch.setattr(store_module, "time", clock)


def _ip(n: int) -> Rate:
    return Rate("ip", f"ip:app:api:2001:db8:{n:x}::/64", 5, WINDOW)


PLAN = Rate("plan", "plan:ws", 1_000_000, WINDOW)


async def test_a_flood_of_new_addresses_stays_under_the_cap() -> None:
    traffic = MemoryTraffic()
    traffic.max_windows = CAP
    for n in range(20 * CAP):
        assert await traffic.admit([_ip(n), PLAN], [], "") is None
        assert len(traffic.windows) <= CAP
        if n == CAP - 1:  # the first call past the cap: a tenth of the cap goes at once
            assert len(traffic.windows) == CAP - CAP // 10
    # The plan's counter, counted on every call, was never the one forgotten.
    assert traffic.windows[PLAN.key][2] == 20 * CAP


async def test_a_full_counter_is_not_forgotten_by_a_few_calls_on_others() -> None:
    traffic = MemoryTraffic()
    traffic.max_windows = CAP
    attacker = _ip(-1)
    for _ in range(5):
        assert await traffic.admit([attacker], [], "") is None
    assert await traffic.admit([attacker], [], "") is not None
    for n in range(CAP - 2):  # short of the cap: nothing is forgotten
        assert await traffic.admit([_ip(n), PLAN], [], "") is None
        assert await traffic.admit([attacker], [], "") is not None
    assert traffic.windows[attacker.key][2] == 5
    # Past the cap it is the first to go: after CAP - 1 admitted calls from other addresses.
    assert await traffic.admit([_ip(CAP), PLAN], [], "") is None
    assert attacker.key not in traffic.windows
    assert traffic.windows[PLAN.key][2] == CAP - 1
