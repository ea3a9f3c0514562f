"""Failed sign-in throttling per email and per client IP (moving window, shared via Redis).

An attempt takes its place in both windows *before* the password is checked (`reserve`, one
atomic `limits` hit per key: a lock in process, a Lua script in Redis), so at most
`max_failures` checks per email and per IP are in progress or failed within the window, however
many arrive at once. A wrong password leaves the place taken: it was the failure. A right one
gives it back (`succeeded`: the email's failures are cleared, as before; the IP gets its one
place back but keeps its failures, so signing in to one's own account resets nothing else).

Under traffic control's failure policy (`traffic/control.py`): while Redis is unreachable the
throttle follows the frequency limits' mode (open: sign-in works unthrottled; closed: 503),
never a 500. Refusals count in `apiforge_limit_rejections_total{kind="login"}`.

In process the windows are capped (`MAX_WINDOWS`, about 500 bytes each): at the cap an attempt
that would open a window is refused (429, as the IP's), and none is forgotten to make room.
Forgetting the oldest would let a flood from many addresses wipe the failures counted against a
victim's email, and so multiply the guesses against it; refusing costs, while the flood lasts,
only sign-ins from an address and an email that both have no window yet.
"""

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from limits import RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.storage.redis.redispy import RedispyBridge
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis

from apiforge.core.errors import RateLimitedError
from apiforge.http.metrics import LIMIT_REJECTIONS
from apiforge.tools.netpolicy import limit_group
from apiforge.traffic.frequency import Rate
from apiforge.traffic.headers import exceeded_headers

if TYPE_CHECKING:
    from apiforge.traffic.control import TrafficControl

T = TypeVar("T")
# In-process windows (an email's, an address's) held at most: ~50 MB. With the default window,
# reached only by about 50,000 failed sign-ins from distinct addresses within 15 minutes.
MAX_WINDOWS = 100_000
Key = tuple[str, str]  # (scope, identifier), as `limits` keys a window


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
        self._remove_newest = _newest_entry_remover(storage)
        self._clear = _window_clearer(storage, self.limiter, self.item)
        self._has_room = _room_checker(storage)

    def _keys(self, email: str, ip: str) -> list[Key]:
        # An IPv6 client counts by its /64 (`limit_group`): it could rotate through all of it.
        return [("login-email", email.lower()), ("login-ip", limit_group(ip) or "unknown")]

    async def reserve(self, email: str, ip: str) -> None:
        """Count this attempt as a failure under the email and the IP before the password is
        checked, or raise 429 `login_throttled`, counting nothing, when either is full."""
        refusal = await self._guarded(lambda: self._reserve(email, ip), None)
        if refusal is None:
            return
        scope, retry = refusal
        LIMIT_REJECTIONS.labels("login", scope).inc()
        error = RateLimitedError(
            "Too many failed sign-in attempts; try again later",
            retry_after=retry,
            reason="login_throttled",
        )
        limit, window = self.item.amount, self.item.get_expiry()
        rates = [
            Rate(name.removeprefix("login-"), key, limit, window)
            for name, key in self._keys(email, ip)
        ]
        refusing = next(rate for rate in rates if rate.scope == scope)
        error.headers = exceeded_headers(rates, refusing, retry)
        raise error

    async def _reserve(self, email: str, ip: str) -> tuple[str, int] | None:
        keys = self._keys(email, ip)
        # An address out of places is refused before any email's window is touched: a window,
        # even one given back, stays in the storage until it expires (in process: a list and a
        # lock until the storage's expiry pass reaches it), and emails cost a client nothing to
        # vary: a flood of cheap 429s, each with a new one, outgrew what that pass empties.
        ip_stats = await self.limiter.get_window_stats(self.item, *keys[1])
        if ip_stats.remaining <= 0:
            email_stats = await self.limiter.get_window_stats(self.item, *keys[0])
            if email_stats.remaining <= 0:  # named first, as when the email's hit refuses it
                return "email", _retry(email_stats.reset_time)
            return "ip", _retry(ip_stats.reset_time)
        if not self._has_room([self.item.key_for(*key) for key in keys]):
            return "ip", _retry(time.time() + self.item.get_expiry())
        taken: list[Key] = []
        for key in keys:
            if not await self.limiter.hit(self.item, *key):
                for held in taken:  # all or nothing: a refused attempt counts nowhere
                    await self._give_back(held)
                stats = await self.limiter.get_window_stats(self.item, *key)
                return key[0].removeprefix("login-"), _retry(stats.reset_time)
            taken.append(key)
        return None

    async def succeeded(self, email: str, ip: str) -> None:
        """The password was right: clear the email's failures, give the IP its place back."""

        async def operation() -> None:
            await self._clear(self._keys(email, ip)[0])
            await self._give_back(self._keys(email, ip)[1])

        await self._guarded(operation, None)

    async def give_back(self, email: str, ip: str) -> None:
        """The password was right but sign-in is refused for another reason (a disabled
        account): the attempt counts nowhere, and no failure is cleared."""

        async def operation() -> None:
            for key in self._keys(email, ip):
                await self._give_back(key)

        await self._guarded(operation, None)

    async def _give_back(self, key: Key) -> None:
        await self._remove_newest(self.item.key_for(*key))

    async def _guarded(self, operation: Callable[[], Awaitable[T]], fallback: T) -> T:
        if self.control is None:
            return await operation()
        control = self.control
        return await control.guarded("login", control.frequency_mode, operation, fallback)


def _retry(reset_time: float) -> int:
    """`Retry-After` seconds until a window has room again."""
    return max(1, int(reset_time - time.time()) + 1)


def _room_checker(storage: Storage) -> Callable[[list[str]], bool]:
    """Whether the windows named may be used: always in Redis (its keys expire there, out of
    this process); in process, unless `MAX_WINDOWS` are held and one of them is new."""
    if not isinstance(storage, MemoryStorage):
        return lambda _names: True
    events = storage.events

    def has_room(names: list[str]) -> bool:
        return len(events) < MAX_WINDOWS or all(name in events for name in names)

    return has_room


def _window_clearer(
    storage: Storage, limiter: MovingWindowRateLimiter, item: RateLimitItemPerSecond
) -> Callable[[Key], Awaitable[None]]:
    """Clearing a window. `limits`' in-process storage deletes the key unlocked, and its expiry
    task, awaiting a thread between the keys it listed, then reads the deleted one: a KeyError
    that kills the task (and fails a test that signs in). Emptying the list under the key's
    lock leaves the key for that task to drop. Redis: `limits`' own clear."""
    if isinstance(storage, MemoryStorage):
        memory = storage

        async def clear_in_memory(key: Key) -> None:
            name = item.key_for(*key)
            async with memory.locks[name]:
                entries = memory.events.get(name)
                if entries:
                    entries.clear()

        return clear_in_memory

    async def clear(key: Key) -> None:
        await limiter.clear(item, *key)

    return clear


def _newest_entry_remover(storage: Storage) -> Callable[[str], Awaitable[None]]:
    """Removing one entry from a moving window. `limits` has no public way to, so this knows the
    layout of the two storages `core/shared.py` builds (tests/unit/accounts/test_throttle.py
    holds both to it): newest first, in a list per key in process, in a Redis list its Lua
    script pushes on the left. The newest entry, not necessarily the one being given back, goes:
    the counts are exact, and the entries left are at most a password check older."""
    if isinstance(storage, MemoryStorage):
        memory = storage

        async def remove_in_memory(key: str) -> None:
            async with memory.locks[key]:
                entries = memory.events.get(key)
                if entries:
                    del entries[0]

        return remove_in_memory
    bridge = storage.bridge if isinstance(storage, RedisStorage) else None
    client = bridge.get_connection() if isinstance(bridge, RedispyBridge) else None
    if bridge is None or not isinstance(client, Redis):
        raise TypeError(f"Sign-in throttling cannot give attempts back in {type(storage)}")
    redis, prefixed = client, bridge.prefixed_key

    async def remove_in_redis(key: str) -> None:
        await redis.lpop(prefixed(key))

    return remove_in_redis
