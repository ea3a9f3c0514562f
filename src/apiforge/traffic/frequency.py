"""Frequency limits: at most N calls per window per counter (an IP on an API, a key on an API, a
workspace's plan).

The window slides the way `limits`' sliding-window counter does: the previous fixed window's
count, weighted by how much of it still overlaps the last `window` seconds, plus the current
window's count. Constant memory and time per counter whatever the limit (a moving window keeps
one timestamp per call: 100,000 entries for a busy plan), at the price of taking the previous
window's calls as spread evenly: a burst at its very end is counted as leaving the sliding
window steadily through the next one, though all of it is still inside, so a 60 s span across
a boundary may hold up to nearly twice the limit (docs/traffic.md); within one fixed window the
limit is exact. The same arithmetic runs in
process (`MemoryTraffic`) and in Redis's Lua (`RedisTraffic`, `store.py`).
"""

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Rate:
    """One counter a call is counted in: `scope` names the policy (ip, key, plan, ...)."""

    scope: str
    key: str
    limit: int
    window: int  # seconds


def weighted_count(previous: int, current: int, elapsed_ms: float, window_ms: int) -> float:
    """Calls in the sliding window ending now, `elapsed_ms` into the current fixed window."""
    return previous * (1 - elapsed_ms / window_ms) + current


def wait_ms(limit: int, previous: int, current: int, elapsed_ms: float, window_ms: int) -> float:
    """How long until one more call fits: within this window if only the previous window's
    weight is in the way, else past the boundary once the current count has decayed enough."""
    room = limit - 1
    if current <= room and previous > 0:
        return max(0.0, window_ms * (1 - (room - current) / previous) - elapsed_ms)
    to_boundary = window_ms - elapsed_ms
    return to_boundary + (window_ms * (1 - room / current) if current > 0 else 0.0)


def retry_seconds(milliseconds: float) -> int:
    return max(1, math.ceil(milliseconds / 1000))
