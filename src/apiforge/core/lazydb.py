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
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncTransaction

from apiforge.core.db import interrupt_sqlite, sqlite_file, sqlite_functions
from apiforge.core.errors import DatabaseUnavailableError

Statement = tuple[str, Sequence[Any]]  # SQL text and its positional parameters
T = TypeVar("T")

# Migration 0009's triggers, which count every collection's record writes (`CollectionWrites`).
WRITE_COUNTING_TRIGGERS = (
    "records_counted_insert",
    "records_counted_update",
    "records_counted_delete",
)


class SqliteReader:
    """One read-only connection to the database file, opened on first use and shared by every
    call of the process, with a thread of its own: statements run there in order, several in
    one hop when a read needs more than one (a page and its count); SQLite's WAL lets it read
    while the pool's connections write."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._inline: sqlite3.Connection | None = None  # `peek`'s, used on the loop's thread
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite-reader")
        self._running: object | None = None  # the token of the work on the thread now
        self._running_lock = threading.Lock()
        self.writes_counted = False  # the file has the write-counting triggers (known once open)

    @classmethod
    def for_url(cls, url: str) -> "SqliteReader | None":
        """A reader for an SQLite file; None for other databases and in-memory SQLite."""
        path = sqlite_file(url)
        return None if path is None else cls(path)

    async def rows(self, sql: str, params: Sequence[Any]) -> list[Any]:
        return (await self.rows_many(((sql, params),)))[0]

    async def rows_many(self, statements: Sequence[Statement]) -> list[list[Any]]:
        """The rows of each statement, all run in one hop to the reader's thread."""
        return await self.call(partial(_rows_of, statements))

    async def call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` on the reader's thread, in one hop; it must only read.

        A caller cancelled meanwhile (its call's deadline passed, say) stops
        the work too: still queued, it never runs; running, its statement is interrupted.
        Otherwise one expensive filter would keep the thread every call of the process shares
        busy long after its own call had answered."""
        loop = asyncio.get_running_loop()
        token = object()
        try:
            return await loop.run_in_executor(self._thread, self._call, work, token)
        except asyncio.CancelledError:
            self._interrupt(token)
            raise

    def peek(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """`work(connection)` right here, on the caller's (the event loop's) thread, on a
        read-only connection of its own: for a point lookup by key, which costs SQLite a few
        microseconds where the hop to the reader's thread and back costs the process far more
        (two thread switches and the loop's wake-up). It must only read, by an indexed key."""
        connection = self._inline
        if connection is None:
            connection = self._inline = _read_only(self.path)
        return work(connection)

    def _call(self, work: Callable[[sqlite3.Connection], T], token: object) -> T:
        connection = self._open()
        with self._running_lock:
            self._running = token
        try:
            return work(connection)
        finally:
            with self._running_lock:
                self._running = None

    def _interrupt(self, token: object) -> None:
        """Interrupt the reader's statement if it is `token`'s work's (under the lock, so it
        never hits the next work's; between statements it is a no-op)."""
        with self._running_lock:
            if self._running is token and self._connection is not None:
                self._connection.interrupt()

    def _open(self) -> sqlite3.Connection:
        connection = self._connection
        if connection is None:
            connection = _read_only(self.path)
            found = connection.execute(
                "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'records'"
            ).fetchall()
            self.writes_counted = set(WRITE_COUNTING_TRIGGERS) <= {name for (name,) in found}
            self._connection = connection
        return connection

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=False)

    def _close(self) -> None:
        if self._inline is not None:
            inline, self._inline = self._inline, None
            inline.close()
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()


def _read_only(path: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, timeout=5, check_same_thread=False)
    connection.execute("PRAGMA query_only=ON")
    sqlite_functions(connection)  # reads run compiled filters too
    return connection


def _rows_of(statements: Sequence[Statement], db: sqlite3.Connection) -> list[list[Any]]:
    return [db.execute(sql, params).fetchall() for sql, params in statements]


# Whether the open transaction wrote or locked a row (either gives it a transaction id).
_WROTE = text("SELECT txid_current_if_assigned() IS NOT NULL")


class _LazyTransaction(AsyncTransaction):
    __slots__ = ()

    async def start(self, is_ctxmanager: bool = False) -> AsyncTransaction:
        await self.connection.ensure()  # type: ignore[attr-defined]
        return await super().start(is_ctxmanager)


class LazyConnection(AsyncConnection):
    """An `AsyncConnection` that checks its pooled connection out on its first statement; a
    call that never needs one never pays for the checkout, the check-in or a reset.

    It also reports the end of its transactions (`core.db.TransactionEnd`): actions given to
    `on_end` run once its `commit` has returned (or failed: it may have committed), or when it
    rolls back, is closed or lets its connection go (whatever it held is rolled back)."""

    __slots__ = ("_ends", "reader")

    def __init__(self, engine: AsyncEngine, reader: SqliteReader | None = None) -> None:
        super().__init__(engine)
        self.reader = reader
        self._ends: list[Callable[[bool], None]] | None = None

    def on_end(self, action: Callable[[bool], None]) -> None:
        if self._ends is None:
            self._ends = [action]
        else:
            self._ends.append(action)

    def _ended(self, committed: bool) -> None:
        ends = self._ends
        if ends is not None:
            self._ends = None
            for action in ends:
                action(committed)

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
            try:
                await super().commit()
            finally:
                # On SQLite a charge's write, queued to the driver's thread ahead of this
                # commit, may be what commits the call: done by the time this returns. A commit
                # that failed or was cancelled midway may have committed: counted as committed.
                self._ended(True)

    async def rollback(self) -> None:
        self._ended(False)
        if self.sync_connection is not None:
            await super().rollback()

    async def close(self) -> None:
        self._ended(False)  # whatever is still open rolls back
        if self.sync_connection is not None:
            await super().close()

    async def let_go(self, *, before_wait: bool = False) -> None:
        """Give the pooled connection back while the call holds nothing on it, so a call that
        read on a cache miss does not keep one of the pool's connections from the others while
        it waits; the next statement checks one out again.

        SQLite (before the steps, and before a wait): when no transaction is open at the driver
        (the call only read). PostgreSQL only `before_wait` (an HTTP step to a slow upstream:
        checking a connection out again costs a ping, worth it only then), when no transaction
        is open (a reservation committed) or the open one neither wrote nor locked a row (it
        has no transaction id: one round trip) and holds no savepoint."""
        connection = self.sync_connection
        if connection is None:
            return
        if self.dialect.name == "sqlite":
            driver = connection.connection.driver_connection
            if driver is None or driver.in_transaction:
                return
        elif not before_wait:
            return
        elif super().in_transaction():
            if self.in_nested_transaction() or await super().scalar(_WROTE):
                return
            await super().rollback()
        self._ended(False)
        await super().close()
        self.sync_connection = None

    @property  # type: ignore[misc]  # read-only here: known before connecting
    def dialect(self) -> Any:
        return self.sync_engine.dialect


def shared_reader(connection: AsyncConnection) -> SqliteReader | None:
    """The process's shared reader, when `connection` is a call's that has made no statement yet
    (so reading committed data is reading what the call would see)."""
    if isinstance(connection, LazyConnection) and not connection.sync_connection:
        return connection.reader
    return None


async def driver_rows(
    connection: AsyncConnection, statements: Sequence[Statement]
) -> list[list[Any]]:
    """The rows of each statement, run by the driver itself: on the shared reader (all in one
    hop) when the call has not used its connection yet, else on the call's connection (one hop
    to aiosqlite's thread, or one asyncpg round trip, each), inside its transaction."""
    reader = shared_reader(connection)
    if reader is not None:
        return await reader.rows_many(statements)
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    if connection.dialect.name == "sqlite":
        try:
            return [list(await driver.execute_fetchall(sql, params)) for sql, params in statements]
        except asyncio.CancelledError:
            interrupt_sqlite(driver)  # as SQLAlchemy's statements (`core.db`)
            raise
    try:
        return [list(await driver.fetch(sql, *params)) for sql, params in statements]
    except Exception as exc:
        if not (driver.is_closed() or isinstance(exc, TimeoutError)):
            raise
        # Lost or not answering under the read: asyncpg's own error, which SQLAlchemy never
        # saw. Dropped from the pool, and a 503, as SQLAlchemy's statements get (`core.db`
        # `database_refusal`, `_timed_out`).
        await connection.invalidate(exc)
        raise DatabaseUnavailableError() from exc
