"""Short-lived per-process caches of database reads on the gateway's path, refreshed ahead.

Keys, subscriptions, resolved targets and limits are read at most once a `ttl` per process, so a
change made on another node is seen within it. A plain expiring cache makes every call that
arrives after the expiry read the row again — under load, all the calls in flight at once, each
on a pooled connection of its own (a burst that stalled every call by tens of milliseconds). Here
an entry answers until `ttl`; from half of it on, the first call that finds it starts one re-read
in the background, on a connection of its own, and goes on with the entry it has. Under steady
traffic no call waits for a read; only a missing or expired entry is read inline, on the call's
own connection, so that read sees what the call itself sees.

A cache of answers anyone can ask for (keys by secret) keeps its `None` answers apart, in a
smaller map of their own (`misses`): a flood of made-up keys then pushes out only other made-up
keys, never the real ones calls need, and a hit still costs one dict lookup.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncConnection

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

log = structlog.get_logger(__name__)

Load = Callable[[AsyncConnection, K], Awaitable[V]]


class RefreshingCache(Generic[K, V]):
    """A bounded map `key -> (read at, value)`; `None` and other falsy values are answers too.
    With `misses` > 0, `None` answers go to a map of their own of that size, so they never
    evict others. `forget` drops an entry (a change made through this process applies at once)
    and discards any read of it still in flight, which may predate the change."""

    __slots__ = (
        "_entries",
        "_generation",
        "_misses",
        "_refreshing",
        "_tasks",
        "clock",
        "load",
        "misses",
        "size",
        "ttl",
    )

    def __init__(
        self,
        ttl: float,
        size: int,
        load: Load[K, V],
        clock: Callable[[], float] = time.monotonic,
        *,
        misses: int = 0,
    ) -> None:
        self.ttl = ttl
        self.size = size
        self.misses = misses
        self.load = load
        self.clock = clock
        self._entries: dict[K, tuple[float, V]] = {}
        self._misses: dict[K, tuple[float, V]] = {}  # `None` answers, when `misses` > 0
        self._refreshing: dict[K, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # every re-read still running
        self._generation = 0  # bumped by every forget: an older read is not stored

    async def get(self, conn: AsyncConnection, key: K) -> V:
        entry = self._entries.get(key)
        if entry is None and self._misses:
            entry = self._misses.get(key)
        now = self.clock()
        if entry is not None:
            age = now - entry[0]
            if age < self.ttl:
                if age >= self.ttl / 2 and key not in self._refreshing:
                    self._refresh(conn, key)
                return entry[1]
        generation = self._generation
        value = await self.load(conn, key)
        if generation == self._generation:
            self._put(key, now, value)
        return value

    async def reread(self, conn: AsyncConnection, key: K, min_age: float) -> V | None:
        """Read `key` again now, on the call's connection, unless its entry was read less than
        `min_age` ago (None then): for an answer that shows the entry may predate a change made
        on another node. `min_age` bounds how often answers anyone can send cost a read."""
        entry = self._entries.get(key)
        if entry is None and self._misses:
            entry = self._misses.get(key)
        now = self.clock()
        if entry is not None and now - entry[0] < min_age:
            return None
        generation = self._generation
        value = await self.load(conn, key)
        if generation == self._generation:
            self._put(key, now, value)
        return value

    def _refresh(self, conn: AsyncConnection, key: K) -> None:
        engine = conn.engine
        generation = self._generation

        async def reread() -> None:
            started = self.clock()
            try:
                async with engine.connect() as own:
                    value = await self.load(own, key)
            except Exception as exc:  # the next call reads it inline and meets the error itself
                if generation == self._generation:
                    self._entries.pop(key, None)
                    self._misses.pop(key, None)
                log.info("cache_refresh_failed", key=str(key), error=repr(exc))
                return
            finally:
                if self._refreshing.get(key) is task:
                    del self._refreshing[key]
            if generation == self._generation:
                self._put(key, started, value)

        task = asyncio.get_running_loop().create_task(reread())
        self._refreshing[key] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _put(self, key: K, read_at: float, value: V) -> None:
        self._entries.pop(key, None)
        self._misses.pop(key, None)
        if value is None and self.misses:
            entries, size = self._misses, self.misses
        else:
            entries, size = self._entries, self.size
        entries[key] = (read_at, value)
        if len(entries) > size:
            del entries[next(iter(entries))]  # the oldest read goes first

    def put(self, key: K, value: V) -> None:
        """Store `value` as read now (a value this process just wrote, or a benchmark's)."""
        self._put(key, self.clock(), value)

    def forget(self, key: K) -> None:
        self._generation += 1
        self._entries.pop(key, None)
        self._misses.pop(key, None)
        self._refreshing.pop(key, None)

    def forget_where(self, matches: Callable[[K], bool]) -> None:
        self._generation += 1
        for entries in (self._entries, self._misses):
            for key in [key for key in entries if matches(key)]:
                del entries[key]
        for key in [key for key in self._refreshing if matches(key)]:
            del self._refreshing[key]

    def forget_values(self, matches: Callable[[V], bool]) -> None:
        """`forget_where` by what the entries hold (the keys of deleted workspaces)."""
        self._generation += 1
        for entries in (self._entries, self._misses):
            for key in [key for key, (_, value) in entries.items() if matches(value)]:
                del entries[key]

    def clear(self) -> None:
        self._generation += 1
        self._entries.clear()
        self._misses.clear()
        self._refreshing.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._entries or key in self._misses

    async def close(self) -> None:
        """Stop the re-reads in flight (process shutdown)."""
        tasks = list(self._tasks)
        self._refreshing.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
