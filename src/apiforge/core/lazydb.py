"""A gateway call's database access: a connection checked out only when a statement needs one,
and on SQLite a shared read-only connection for reads that need no transaction.

Most gateway calls find everything they need in the per-process caches (keys, subscriptions,
resolved apps, compiled plans, app secrets) and then run a page query or two. Checking a pooled
connection out and back in costs a call about as much as its whole page query on SQLite, so the
call's connection (`LazyConnection`) connects on its first statement, and a prepared read made
before any statement of the call (`driver_rows`) goes to one read-only connection the process
shares — what a hand-written endpoint would do. Reads after a statement of the call use
the call's own connection, so they see its uncommitted writes.
"""

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from apiforge.core.db import sqlite_file

Statement = tuple[str, Sequence[Any]]  # SQL text and its positional parameters


class SqliteReader:
    """One read-only connection to the database file, opened on first use and shared by every
    call of the process, with a thread of its own: statements run there in order, several in
    one hop when a read needs more than one (a page and its count); SQLite's WAL lets it read
    while the pool's connections write."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")

    @classmethod
    def for_url(cls, url: str) -> "SqliteReader | None":
        """A reader for an SQLite file; None for other databases and in-memory SQLite."""
        path = sqlite_file(url)
        return None if path is None else cls(path)

    async def rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return (await self.rows_many(((sql, params),)))[0]

    async def rows_many(self, statements: Sequence[Statement]) -> list[list[Any]]:
        """The rows of each statement, all run in one hop to the reader's thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._run, statements)

    def _run(self, statements: Sequence[Statement]) -> list[list[Any]]:
        """On the reader's thread."""
        connection = self._connection
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
            connection.execute("PRAGMA query_only=ON")
            self._connection = connection
        return [connection.execute(sql, params).fetchall() for sql, params in statements]

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=False)

    def _close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()


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


async def driver_rows(
    connection: AsyncConnection, statements: Sequence[Statement]
) -> list[list[Any]]:
    """The rows of each statement, run by the driver itself: on the shared reader (all in one
    hop) when the call has not used its connection yet, else on the call's connection (one hop
    to aiosqlite's thread, or one asyncpg round trip, each), inside its transaction."""
    reader = connection.reader if isinstance(connection, LazyConnection) else None
    if reader is not None and not connection.sync_connection:
        return await reader.rows_many(statements)
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    if connection.dialect.name == "sqlite":
        return [list(await driver.execute_fetchall(sql, params)) for sql, params in statements]
    return [list(await driver.fetch(sql, *params)) for sql, params in statements]
