"""Frequency limits: at most N calls per window per counter (an IP on an API, a key on an API, a
workspace's plan), an exact sliding window (the `limits` library's moving window) kept in Redis
across processes or in memory for one process."""

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter


@lru_cache(maxsize=1024)
def rate_item(limit: int, window_seconds: int) -> RateLimitItem:
    """`limit` calls per `window_seconds` (items are immutable, so one per pair is shared)."""
    return RateLimitItemPerSecond(limit, window_seconds)


@dataclass(frozen=True, slots=True)
class Rate:
    """One counter a call is counted in: `scope` names the policy (ip, key, plan)."""

    scope: str
    key: str
    limit: int
    window: int

    @property
    def item(self) -> RateLimitItem:
        return rate_item(self.limit, self.window)


@dataclass(frozen=True, slots=True)
class Exceeded:
    rate: Rate
    retry_after: int  # whole seconds until the window has room again (≥ 1)


class FrequencyLimiter:
    """Counts a call in each rate, in order, and stops at the first that is full (the call
    then counts in the rates before it, not in that one or those after)."""

    def __init__(self, storage: Storage) -> None:
        self.limiter = MovingWindowRateLimiter(storage)

    async def hit(self, rates: Sequence[Rate]) -> Exceeded | None:
        for rate in rates:
            item = rate.item
            if not await self.limiter.hit(item, rate.key):
                stats = await self.limiter.get_window_stats(item, rate.key)
                return Exceeded(rate, max(1, math.ceil(stats.reset_time - time.time())))
        return None
