"""`OwnSqlite` never drops an open connection: one whose opening fails midway (a call cancelled
while its pragmas run, a pragma refused) is closed, and `close` closes whatever its last work
does. A dropped aiosqlite connection keeps its thread and file handle until the collector finds
it, and warns then, in whatever later code runs the collector."""

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import aiosqlite
import pytest

from apiforge.core import own_sqlite
from apiforge.core.errors import UnavailableError
from apiforge.core.own_sqlite import OwnSqlite


async def _ended(connection: Any) -> bool:
    """Whether the connection's thread has stopped, with its sqlite3 connection closed (if not,
    it is stopped now: a live thread would keep the test process from exiting)."""
    thread = connection._thread
    await asyncio.to_thread(thread.join, 5)
    ended = not thread.is_alive() and connection._connection is None
    if not ended:
        connection.stop()
    return ended


def _recording(monkeypatch: pytest.MonkeyPatch) -> list[aiosqlite.Connection]:
    opened: list[aiosqlite.Connection] = []
    real = aiosqlite.connect

    def connect(*args: Any, **kwargs: Any) -> aiosqlite.Connection:
        connection = real(*args, **kwargs)
        opened.append(connection)
        return connection

    monkeypatch.setattr(aiosqlite, "connect", connect)
    return opened


async def test_a_refused_pragma_closes_the_connection_it_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = _recording(monkeypatch)
    monkeypatch.setattr(own_sqlite, "SQLITE_PRAGMAS", ("PRAGMA journal_mode=WAL", "PRAGMA ("))
    own = OwnSqlite(str(tmp_path / "a.db"))
    with pytest.raises(sqlite3.OperationalError):
        await own.get()
    assert own.connection is None
    assert len(opened) == 1
    assert await _ended(opened[0])


async def test_a_call_cancelled_while_the_connection_opens_closes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened = _recording(monkeypatch)
    started = asyncio.Event()
    real_execute = aiosqlite.Connection.execute

    async def slow_execute(self: aiosqlite.Connection, sql: str, *args: Any) -> Any:
        started.set()
        await asyncio.sleep(10)
        return await real_execute(self, sql, *args)

    monkeypatch.setattr(aiosqlite.Connection, "execute", slow_execute)
    own = OwnSqlite(str(tmp_path / "b.db"))
    task = asyncio.create_task(own.get())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert own.connection is None
    assert await _ended(opened[0])


async def test_close_closes_the_connection_when_its_last_work_fails(tmp_path: Path) -> None:
    own = OwnSqlite(str(tmp_path / "c.db"))
    connection = await own.get()

    def last(_db: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    with pytest.raises(sqlite3.OperationalError):
        await own.close(last)
    assert await _ended(connection)
    with pytest.raises(UnavailableError):
        await own.get()
