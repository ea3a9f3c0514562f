"""One `TrafficControl` per process: the stores, the failure policy and the rules cache that the
gateway stages, the login throttle and key creation share (built in `app.py`)."""

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from limits.aio.storage import MemoryStorage, Storage
from redis.asyncio import Redis

from apiforge.core.errors import ApiforgeError
from apiforge.core.settings import Settings
from apiforge.http.metrics import LIMIT_REJECTIONS
from apiforge.traffic.concurrency import (
    ConcurrencyStore,
    MemoryConcurrency,
    RedisConcurrency,
    Slot,
)
from apiforge.traffic.failure import STORE_ERRORS, FailureMode, StoreHealth
from apiforge.traffic.frequency import Exceeded, FrequencyLimiter, Rate
from apiforge.traffic.headers import exceeded_headers
from apiforge.traffic.rules import LimitRules

T = TypeVar("T")
CONCURRENCY_RETRY_SECONDS = 1


class TooManyRequestsError(ApiforgeError):
    """429 `too_many_requests`, naming the limit kind and scope that refused the call."""

    status = 429
    reason = "too_many_requests"
    message = "Too many requests"

    def __init__(
        self, message: str, *, kind: str, scope: str, limit: int, headers: dict[str, str]
    ) -> None:
        LIMIT_REJECTIONS.labels(kind, scope).inc()
        retry = int(headers["Retry-After"])
        super().__init__(
            message,
            details={"limit": kind, "scope": scope, "max": limit, "retryAfter": retry},
            headers=headers,
        )


class TrafficControl:
    def __init__(self, settings: Settings, redis: Redis | None, storage: Storage) -> None:
        self.health = StoreHealth()
        self.frequency_mode: FailureMode = settings.traffic_frequency_failure
        self.concurrency_mode: FailureMode = settings.traffic_concurrency_failure
        # Memory storage never fails: only a shared store goes through the failure policy.
        self.frequency_shared = not isinstance(storage, MemoryStorage)
        self.frequency = FrequencyLimiter(storage)
        self.concurrency: ConcurrencyStore = (
            RedisConcurrency(redis, settings.redis_prefix, settings.traffic_lease_seconds)
            if redis is not None
            else MemoryConcurrency()
        )
        self.rules = LimitRules()

    async def guarded(
        self, kind: str, mode: FailureMode, operation: Callable[[], Awaitable[T]], fallback: T
    ) -> T:
        """Run one store operation under `kind`'s failure mode: `fallback` (open) or 503
        (closed) while the store is unreachable, never an unhandled error."""
        if not self.health.usable():
            self.health.degrade(kind, mode)
            return fallback
        try:
            result = await operation()
        except STORE_ERRORS as exc:
            self.health.failed(exc)
            self.health.degrade(kind, mode)
            return fallback
        self.health.succeeded()
        return result

    async def hit(self, rates: Sequence[Rate], kind: str = "frequency") -> None:
        """Count a call in `rates`; 429 with the rate-limit headers at the first full one."""
        if self.frequency_shared:
            exceeded = await self.guarded(
                kind, self.frequency_mode, lambda: self.frequency.hit(rates), None
            )
        else:
            exceeded = await self.frequency.hit(rates)
        if exceeded is not None:
            raise _frequency_refusal(rates, exceeded, kind)

    async def acquire(self, slots: Sequence[Slot], member: str) -> bool:
        """Take a place in every slot; 429 when one is full. False when nothing is held (the
        store was unreachable and the limit fails open), so there is nothing to release."""
        store = self.concurrency
        if store.shared:
            held = object()
            full = await self.guarded(
                "concurrency",
                self.concurrency_mode,
                lambda: store.acquire(slots, member),
                held,
            )
            if full is held:
                return False
        else:
            full = await store.acquire(slots, member)
        if isinstance(full, Slot):
            raise TooManyRequestsError(
                f"At most {full.limit} calls may be in flight at once ({full.scope} limit)",
                kind="concurrency",
                scope=full.scope,
                limit=full.limit,
                headers={"Retry-After": str(CONCURRENCY_RETRY_SECONDS)},
            )
        return True

    async def release(self, slots: Sequence[Slot], member: str) -> None:
        """Give the places back, even while the caller's task is being cancelled (a client gone
        mid-call); a store failure leaves the lease to expire. Never raises."""
        store = self.concurrency
        if not store.shared:
            await store.release(slots, member)
            return
        try:
            await asyncio.shield(store.release(slots, member))
        except STORE_ERRORS as exc:
            self.health.failed(exc)
        # A cancellation propagates; the shielded release still completes on its own.


def _frequency_refusal(rates: Sequence[Rate], exceeded: Exceeded, kind: str) -> ApiforgeError:
    rate = exceeded.rate
    return TooManyRequestsError(
        f"At most {rate.limit} calls per {rate.window} s ({rate.scope} limit); retry later",
        kind=kind,
        scope=rate.scope,
        limit=rate.limit,
        headers=exceeded_headers(rates, exceeded),
    )
