"""`RefreshingCache`: answers for `ttl`, re-read once ahead of expiry off the caller's path."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.cache import RefreshingCache


class FakeEngine:
    def __init__(self) -> None:
        self.opened = 0

    @asynccontextmanager
    async def connect(self) -> AsyncIterator["FakeConnection"]:
        self.opened += 1
        yield FakeConnection(self, own=True)


class FakeConnection:
    def __init__(self, engine: FakeEngine, own: bool = False) -> None:
        self.engine = engine
        self.own = own


class Source:
    """The database: a value per key, counting reads and on which connection they ran."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.reads: list[tuple[str, bool]] = []
        self.gate: asyncio.Event | None = None  # set: reads wait for it
        self.fail: Exception | None = None

    async def load(self, conn: AsyncConnection, key: str) -> Any:
        self.reads.append((key, cast(FakeConnection, conn).own))
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return self.values.get(key)


def setup(
    ttl: float = 10.0, size: int = 100
) -> tuple[RefreshingCache[str, Any], Source, list[float], AsyncConnection]:
    source = Source()
    clock = [1000.0]
    cache = RefreshingCache[str, Any](ttl, size, source.load, clock=lambda: clock[0])
    conn = cast(AsyncConnection, FakeConnection(FakeEngine()))
    return cache, source, clock, conn


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_fresh_entries_answer_without_reading_and_none_is_an_answer() -> None:
    cache, source, clock, conn = setup()
    source.values["a"] = 1
    assert await cache.get(conn, "a") == 1
    assert await cache.get(conn, "missing") is None  # "not found" is cached like any answer
    clock[0] += 4.9
    assert await cache.get(conn, "a") == 1
    assert await cache.get(conn, "missing") is None
    assert source.reads == [("a", False), ("missing", False)]  # inline, on the caller's conn


async def test_an_expired_entry_is_read_inline_on_the_callers_connection() -> None:
    cache, source, clock, conn = setup()
    source.values["a"] = 1
    await cache.get(conn, "a")
    source.values["a"] = 2
    clock[0] += 10.0
    assert await cache.get(conn, "a") == 2
    assert source.reads == [("a", False), ("a", False)]


async def test_past_half_its_ttl_one_background_read_refreshes_the_entry() -> None:
    cache, source, clock, conn = setup()
    source.values["a"] = 1
    await cache.get(conn, "a")
    source.values["a"] = 2
    source.gate = asyncio.Event()
    clock[0] += 6.0
    # A burst of calls: each answers at once with what it has; only one re-read starts.
    answers = await asyncio.gather(*(cache.get(conn, "a") for _ in range(32)))
    assert answers == [1] * 32
    await settle()
    assert source.reads == [("a", False), ("a", True)]  # the re-read on a connection of its own
    source.gate.set()
    await settle()
    assert await cache.get(conn, "a") == 2
    # The entry counts from when the re-read started: fresh again for another half ttl.
    clock[0] += 4.0
    assert await cache.get(conn, "a") == 2
    assert len(source.reads) == 2


async def test_forget_drops_the_entry_and_the_read_in_flight() -> None:
    cache, source, clock, conn = setup()
    source.values["a"] = 1
    await cache.get(conn, "a")
    source.gate = asyncio.Event()
    clock[0] += 6.0
    await cache.get(conn, "a")  # starts a re-read that will see the old value
    await settle()
    cache.forget("a")  # a change was made: the read in flight may predate it
    source.gate.set()
    await settle()
    assert "a" not in cache
    source.values["a"] = 3
    assert await cache.get(conn, "a") == 3


async def test_forget_where_and_clear() -> None:
    cache, source, _, conn = setup()
    for key in ("x1", "x2", "y1"):
        source.values[key] = key
        await cache.get(conn, key)
    cache.forget_where(lambda key: key.startswith("x"))
    assert ("x1" in cache, "x2" in cache, "y1" in cache) == (False, False, True)
    cache.clear()
    assert "y1" not in cache


async def test_an_inline_read_that_races_a_forget_is_not_kept() -> None:
    cache, source, _, conn = setup()
    source.values["a"] = 1
    source.gate = asyncio.Event()
    reading = asyncio.create_task(cache.get(conn, "a"))
    await settle()
    cache.forget("a")
    source.gate.set()
    assert await reading == 1  # the caller gets what it read...
    assert "a" not in cache  # ...but nobody else does


async def test_a_failed_refresh_drops_the_entry_and_the_next_call_meets_the_error() -> None:
    cache, source, clock, conn = setup()
    source.values["a"] = 1
    await cache.get(conn, "a")
    source.fail = LookupError("gone")
    clock[0] += 6.0
    assert await cache.get(conn, "a") == 1
    await settle()
    assert "a" not in cache
    with pytest.raises(LookupError):
        await cache.get(conn, "a")


async def test_the_size_is_bounded_oldest_read_first() -> None:
    cache, source, _, conn = setup(size=2)
    for key in ("a", "b", "c"):
        source.values[key] = key
        await cache.get(conn, key)
    assert ("a" in cache, "b" in cache, "c" in cache) == (False, True, True)


async def test_close_cancels_the_reads_in_flight() -> None:
    cache, source, clock, conn = setup()
    source.values["a"] = 1
    await cache.get(conn, "a")
    source.gate = asyncio.Event()
    clock[0] += 6.0
    await cache.get(conn, "a")
    await settle()
    await asyncio.wait_for(cache.close(), 1.0)
    source.gate.set()
    await settle()
    assert await cache.get(conn, "a") == 1  # the cancelled read stored nothing
