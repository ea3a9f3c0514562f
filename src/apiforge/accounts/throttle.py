"""Failed sign-in throttling per email and per client IP (sliding window, shared via Redis)."""

import time

from limits import RateLimitItemPerSecond
from limits.aio.storage import Storage
from limits.aio.strategies import MovingWindowRateLimiter

from apiforge.core.errors import RateLimitedError


class LoginThrottle:
    def __init__(self, storage: Storage, max_failures: int, window_seconds: int) -> None:
        self.limiter = MovingWindowRateLimiter(storage)
        self.item = RateLimitItemPerSecond(max_failures, window_seconds)

    def _keys(self, email: str, ip: str) -> list[tuple[str, str]]:
        return [("login-email", email.lower()), ("login-ip", ip or "unknown")]

    async def check(self, email: str, ip: str) -> None:
        """Refuse before verifying the password when either key is over the limit."""
        for keys in self._keys(email, ip):
            if not await self.limiter.test(self.item, *keys):
                stats = await self.limiter.get_window_stats(self.item, *keys)
                retry = max(1, int(stats.reset_time - time.time()) + 1)
                raise RateLimitedError(
                    "Too many failed sign-in attempts; try again later",
                    retry_after=retry,
                    reason="login_throttled",
                )

    async def failed(self, email: str, ip: str) -> None:
        for keys in self._keys(email, ip):
            await self.limiter.hit(self.item, *keys)

    async def succeeded(self, email: str) -> None:
        await self.limiter.clear(self.item, "login-email", email.lower())
