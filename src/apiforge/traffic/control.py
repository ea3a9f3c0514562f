"""One `TrafficControl` per process: the counters' store, the failure policy and the rules cache
that the gateway's traffic stage and key creation share (built in `app.py`)."""

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.asyncio import Redis

from apiforge.core.errors import ApiforgeError
from apiforge.core.settings import Settings
from apiforge.http.metrics import LIMIT_REJECTIONS
from apiforge.traffic.concurrency import Slot
from apiforge.traffic.failure import (
    STORE_ERRORS,
    FailureMode,
    LimitsUnavailableError,
    StoreHealth,
)
from apiforge.traffic.frequency import Rate, retry_seconds
from apiforge.traffic.headers import exceeded_headers
from apiforge.traffic.rules import LimitRules
from apiforge.traffic.store import MemoryTraffic, RedisTraffic, Refusal, TrafficStore

T = TypeVar("T")


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
    def __init__(self, settings: Settings, redis: Redis | None) -> None:
        self.health = StoreHealth()
        self.frequency_mode: FailureMode = settings.traffic_frequency_failure
        self.concurrency_mode: FailureMode = settings.traffic_concurrency_failure
        self.store: TrafficStore = (
            RedisTraffic(redis, settings.redis_prefix, settings.traffic_lease_seconds)
            if redis is not None
            else MemoryTraffic()
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

    async def admit(
        self,
        rates: Sequence[Rate],
        slots: Sequence[Slot],
        member: str,
        kind: str = "frequency",
    ) -> bool:
        """Count the call in `rates` and hold a place in `slots`, or raise the 429 of the limit
        that refused it. False when nothing is held: the store is unreachable and every limit
        involved fails open (a closed one raises the 503 instead)."""
        store = self.store
        if not store.shared:
            refusal = await store.admit(rates, slots, member)
        else:
            if not self.health.usable():
                self._degrade(rates, slots, kind)
                return False
            try:
                refusal = await store.admit(rates, slots, member)
            except STORE_ERRORS as exc:
                self.health.failed(exc)
                self._degrade(rates, slots, kind)
                return False
            self.health.succeeded()
        if refusal is not None:
            raise _refusal(rates, refusal, kind)
        return True

    def _degrade(self, rates: Sequence[Rate], slots: Sequence[Slot], kind: str) -> None:
        """Every kind involved records the decision; a closed one refuses (503)."""
        closed: LimitsUnavailableError | None = None
        for involved, limit_kind, mode in (
            (rates, kind, self.frequency_mode),
            (slots, "concurrency", self.concurrency_mode),
        ):
            if involved:
                try:
                    self.health.degrade(limit_kind, mode)
                except LimitsUnavailableError as exc:
                    closed = closed or exc
        if closed is not None:
            raise closed

    async def release(self, slots: Sequence[Slot], member: str) -> None:
        """Give the places back. Never awaits I/O, so a call cancelled as its client goes away
        still releases: with Redis the release is queued and sent with the next admission."""
        await self.store.release(slots, member)

    async def close(self) -> None:
        """Send pending releases (Redis), so a stopping server leaves no lease to expire."""
        await self.rules.close()
        await self.store.close()


def _refusal(rates: Sequence[Rate], refusal: Refusal, kind: str) -> ApiforgeError:
    retry = retry_seconds(refusal.retry_after_ms)
    if refusal.rate is not None:
        rate = refusal.rate
        return TooManyRequestsError(
            f"At most {rate.limit} calls per {rate.window} s ({rate.scope} limit); retry later",
            kind=kind,
            scope=rate.scope,
            limit=rate.limit,
            headers=exceeded_headers(rates, rate, retry),
        )
    return TooManyRequestsError(
        f"At most {refusal.limit} calls may be in flight at once ({refusal.scope} limit)",
        kind="concurrency",
        scope=refusal.scope,
        limit=refusal.limit,
        headers={"Retry-After": str(retry)},
    )
