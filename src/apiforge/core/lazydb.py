"""A gateway call's database access: a connection checked out only when a statement needs one,
and on SQLite a shared read-only connection for reads that need no transaction.

Most gateway calls find everything they need in the per-process caches (keys, subscriptions,
resolved apps, compiled plans, app secrets) and then run a page query or two. Checking a pooled
connection out and back in costs a call about as much as its whole page query on SQLite, so the
call's connection (`LazyConnection`) connects on its first statement, and a prepared read made
before any statement of the call (`read_rows`) goes to one read-only aiosqlite connection the
process shares — what a hand-written endpoint would do. Reads after a statement of the call use
the call's own connection, so they see its uncommitted writes.
"""

import asyncio
from collections.abc import Sequence
from typing import Any

import aiosqlite
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction


class SqliteReader:
    """One read-only connection to the database file, opened on first use (on the running
    loop) and shared by every call of the process: aiosqlite runs its statements in order on
    its own thread; SQLite's WAL lets it read while the pool's connections write."""

    def __init__(self, url: str) -> None:
        self.path = make_url(url).database or ""
        self._connection: aiosqlite.Connection | None = None
        self._opening = asyncio.Lock()

    @classmethod
    def for_url(cls, url: str) -> "SqliteReader | None":
        """A reader for an SQLite file; None for other databases and in-memory SQLite."""
        if not url.startswith("sqlite"):
            return None
        path = make_url(url).database or ""
        return None if path in ("", ":memory:") or path.startswith("file:") else cls(url)

    async def rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        connection = self._connection or await self._open()
        return list(await connection.execute_fetchall(sql, params))

    async def _open(self) -> aiosqlite.Connection:
        async with self._opening:
            if self._connection is None:
                connection = await aiosqlite.connect(self.path)
                await connection.execute("PRAGMA query_only=ON")
                await connection.execute("PRAGMA busy_timeout=5000")
                self._connection = connection
            return self._connection

    async def close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()


class _LazyTransaction(AsyncTransaction):
    __slots__ = ()

    async def start(self, is_ctxmanager: bool = False) -> AsyncTransaction:
        await self.connection.ensure()  # type: ignore[attr-defined]
        return await super().start(is_ctxmanager)


class LazyConnection(AsyncConnection):
    """An `AsyncConnection` that checks its pooled connection out on its first statement; a
    call that never needs one never pays for the checkout, the check-in or a reset."""

    __slots__ = ("reader",)

    def __init__(self, engine: AsyncEngine, reader: SqliteReader | None = None) -> None:
        super().__init__(engine)
        self.reader = reader

    @property
    def started(self) -> bool:
        return self.sync_connection is not None

    async def ensure(self) -> None:
        if self.sync_connection is None:
            await self.start()

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        await self.ensure()
        return await super().execute(*args, **kwargs)

    async def scalar(self, *args: Any, **kwargs: Any) -> Any:
        await self.ensure()
        return await super().scalar(*args, **kwargs)

    async def scalars(self, *args: Any, **kwargs: Any) -> Any:
        await self.ensure()
        return await super().scalars(*args, **kwargs)

    async def exec_driver_sql(self, *args: Any, **kwargs: Any) -> Any:
        await self.ensure()
        return await super().exec_driver_sql(*args, **kwargs)

    async def get_raw_connection(self) -> Any:
        await self.ensure()
        return await super().get_raw_connection()

    def begin_nested(self) -> AsyncTransaction:
        return _LazyTransaction(self, nested=True)

    def in_transaction(self) -> bool:
        return self.sync_connection is not None and super().in_transaction()

    async def commit(self) -> None:
        if self.sync_connection is not None:
            await super().commit()

    async def rollback(self) -> None:
        if self.sync_connection is not None:
            await super().rollback()

    async def close(self) -> None:
        if self.sync_connection is not None:
            await super().close()

    @property  # type: ignore[misc]  # read-only here: known before connecting
    def dialect(self) -> Any:
        return self.sync_engine.dialect


async def driver_rows(connection: AsyncConnection, sql: str, params: Sequence[Any]) -> list[Any]:
    """Rows of one statement run by the driver itself: on the shared reader when the call has
    not used its connection yet, else on the call's connection (one hop to aiosqlite's thread,
    or one asyncpg round trip), inside its transaction."""
    reader = connection.reader if isinstance(connection, LazyConnection) else None
    if reader is not None and not connection.sync_connection:
        return await reader.rows(sql, params)
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    if connection.dialect.name == "sqlite":
        return list(await driver.execute_fetchall(sql, params))
    return list(await driver.fetch(sql, *params))
