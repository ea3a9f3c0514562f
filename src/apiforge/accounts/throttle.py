"""Failed sign-in throttling per email and per client IP (sliding window, shared via Redis).

Under traffic control's failure policy (`traffic/control.py`): while Redis is unreachable the
throttle follows the frequency limits' mode (open: sign-in works unthrottled; closed: 503),
never a 500. Refusals count in `apiforge_limit_rejections_total{kind="login"}`.
"""

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from limits import RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter

from apiforge.core.errors import RateLimitedError
from apiforge.http.metrics import LIMIT_REJECTIONS

if TYPE_CHECKING:
    from apiforge.traffic.control import TrafficControl

T = TypeVar("T")


class LoginThrottle:
    def __init__(
        self,
        storage: Storage,
        max_failures: int,
        window_seconds: int,
        control: "TrafficControl | None" = None,
    ) -> None:
        self.limiter = MovingWindowRateLimiter(storage)
        self.item = RateLimitItemPerSecond(max_failures, window_seconds)
        self.control = control

    def _keys(self, email: str, ip: str) -> list[tuple[str, str]]:
        return [("login-email", email.lower()), ("login-ip", ip or "unknown")]

    async def check(self, email: str, ip: str) -> None:
        """Refuse before verifying the password when either key is over the limit."""
        refusal = await self._guarded(lambda: self._refusal(email, ip), None)
        if refusal is not None:
            LIMIT_REJECTIONS.labels("login", refusal[0]).inc()
            raise RateLimitedError(
                "Too many failed sign-in attempts; try again later",
                retry_after=refusal[1],
                reason="login_throttled",
            )

    async def _refusal(self, email: str, ip: str) -> tuple[str, int] | None:
        for keys in self._keys(email, ip):
            if not await self.limiter.test(self.item, *keys):
                stats = await self.limiter.get_window_stats(self.item, *keys)
                retry = max(1, int(stats.reset_time - time.time()) + 1)
                return keys[0].removeprefix("login-"), retry
        return None

    async def failed(self, email: str, ip: str) -> None:
        await self._guarded(lambda: self._failed(email, ip), None)

    async def _failed(self, email: str, ip: str) -> None:
        for keys in self._keys(email, ip):
            await self.limiter.hit(self.item, *keys)

    async def succeeded(self, email: str) -> None:
        await self._guarded(
            lambda: self.limiter.clear(self.item, "login-email", email.lower()), None
        )

    async def _guarded(self, operation: Callable[[], Awaitable[T]], fallback: T) -> T:
        if self.control is None:
            return await operation()
        control = self.control
        return await control.guarded("login", control.frequency_mode, operation, fallback)
