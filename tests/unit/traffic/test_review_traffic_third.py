"""The in-process store reviewed a third time: a refused call leaves nothing behind in memory,
as it leaves nothing in Redis."""

from apiforge.traffic.concurrency import Slot
from apiforge.traffic.frequency import Rate
from apiforge.traffic.store import MemoryTraffic


async def test_calls_refused_from_ever_new_ips_store_no_counters() -> None:
    """One key over its plan's rate, calling from a new client IP each time (an IPv6 range
    gives millions): every refused call used to leave an empty counter for its IP, kept for two
    windows, so memory grew with the refused traffic itself. Only admitted calls store one."""
    store = MemoryTraffic()
    plan = Rate("plan", "plan:ws", 2, 60)
    for n in range(2):
        assert await store.admit([Rate("ip", f"ip:a:x:10.0.0.{n}", 100, 60), plan], [], "") is None
    assert len(store.windows) == 3
    for n in range(1000):
        ip = Rate("ip", f"ip:a:x:2001:db8::{n:x}", 100, 60)
        refused = await store.admit([ip, plan], [], "")
        assert refused is not None
        assert refused.scope == "plan"
    assert len(store.windows) == 3

    # Refused for a full slot: the call's new rate counters are not kept either.
    slot = Slot("app", "app:a", 1)
    assert await store.admit([], [slot], "") is None
    for n in range(100):
        refused = await store.admit([Rate("ip", f"ip:a:y:10.1.0.{n}", 100, 60)], [slot], "")
        assert refused is not None
        assert refused.kind == "concurrency"
    assert len(store.windows) == 3
    await store.release([slot], "")
    assert await store.admit([Rate("ip", "ip:a:y:10.1.0.1", 100, 60)], [slot], "") is None
    assert len(store.windows) == 4
