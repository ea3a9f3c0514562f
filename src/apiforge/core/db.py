"""Database base: naming convention, portable column types, engine and session factories."""

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any, Protocol

import orjson
from sqlalchemy import JSON, URL, ColumnElement, DateTime, MetaData, String, event, make_url, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect, ExceptionContext
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    AsyncTransaction,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, SessionTransaction, mapped_column
from sqlalchemy.pool import NullPool, PoolResetState
from sqlalchemy.sql.elements import Null
from sqlalchemy.types import TypeDecorator

from apiforge.core.errors import DatabaseBusyError, DatabaseUnavailableError, UnavailableError
from apiforge.tools.clock import utcnow
from apiforge.tools.filters import (
    PG_FOLD_ATTRIBUTE,
    PG_FOLD_COLLATIONS,
    SQLITE_LOWER,
    sqlite_lower,
)
from apiforge.tools.ids import new_id

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = JSON().with_variant(JSONB(), "postgresql")
# PostgreSQL's byte-order collation: UTF-8 bytes sort as code points, as SQLite's BINARY does
# (record text fields, datasets/sql.py; management lists' text sorts, http/pagination.py).
TEXT_COLLATION = "C"


class _CompactSqliteJSON(TypeDecorator[Any]):
    """SQLite's JSON column, its text written as orjson writes it (UTF-8, no spaces) rather than
    as `json.dumps` does (`\\u00e9` for `é`, a space after every `,` and `:`: up to three times
    longer), so a size measured with orjson is the size the row holds. Read back as any JSON
    text. Values must be what orjson writes."""

    impl = JSON
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], str | None]:
        def process(value: Any) -> str | None:
            if isinstance(value, Null):
                return None
            return orjson.dumps(None if value is JSON.NULL else value).decode()

        return process


# For values kept under a byte cap measured with orjson (usage/buffer.py `MAX_ARGS_BYTES`); the
# same text the SQLite charger writes for them (billing/charging.py). JSONB stores UTF-8 anyway.
CompactJSONType = (
    JSON().with_variant(JSONB(), "postgresql").with_variant(_CompactSqliteJSON(), "sqlite")
)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSONType}


def id_column() -> Mapped[str]:
    return mapped_column(String(26), primary_key=True, default=new_id)


def created_column() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, nullable=False)


def updated_column() -> Mapped[datetime]:
    return mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow, nullable=False)


SQLITE_POOL_SIZE = 4  # and as many again under bursts


# Every SQLite connection that writes. Checkpoints run in the background (core/checkpoint.py);
# the WAL bound here (~80 MB of 4 KB pages) only holds if that task ever stops running.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=5000",
    "PRAGMA wal_autocheckpoint=20000",
)


def sqlite_functions(connection: Any) -> None:
    """The SQL functions compiled filters call on SQLite (tools/filters.py), on a driver
    connection (sqlite3, or SQLAlchemy's aiosqlite adapter)."""
    connection.create_function(SQLITE_LOWER, 1, sqlite_lower, deterministic=True)


def _postgresql_fold_collation(dialect: Dialect) -> Callable[[Any, Any], None]:
    """A first-connect hook: the collation `_icontains` folds case by (tools/filters.py), the
    first of `PG_FOLD_COLLATIONS` the database has for its encoding (none: its default)."""
    query = (
        "SELECT collname FROM pg_collation WHERE collname = ANY($1::text[]) "
        "AND collnamespace = 'pg_catalog'::regnamespace AND collencoding IN "
        "(-1, (SELECT encoding FROM pg_database WHERE datname = current_database())) "
        "ORDER BY array_position($1::text[], collname::text) LIMIT 1"
    )

    def pick(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(query, (list(PG_FOLD_COLLATIONS),))
        row = cursor.fetchone()
        cursor.close()
        setattr(dialect, PG_FOLD_ATTRIBUTE, row[0] if row else "default")

    return pick


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()
    sqlite_functions(dbapi_conn)


def sqlite_stamp(value: datetime) -> str:
    """A UTC time as SQLAlchemy stores a DateTime on SQLite (`YYYY-MM-DD HH:MM:SS.ffffff`),
    for statements sent to the driver directly; `isoformat` writes that text (then the offset,
    cut off here) for less than `strftime` costs."""
    return value.isoformat(" ", "microseconds")[:26]


def sqlite_file(url: str | URL) -> str | None:
    """The file an SQLite URL names; None for other databases and in-memory SQLite (which get
    no side connections: a second connection would see another, empty database)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    path = parsed.database or ""
    return None if path in ("", ":memory:") or path.startswith("file:") else path


def _sqlite_reset(dbapi_conn: Any, _record: Any, state: PoolResetState) -> None:
    """Roll a returned SQLite connection back only when it is inside a transaction. The driver
    opens one only before a write, so a connection that only read (most gateway calls) goes back
    to the pool without a rollback round trip to aiosqlite's thread."""
    if state.transaction_was_reset or state.terminate_only or not state.asyncio_safe:
        return
    if dbapi_conn.driver_connection.in_transaction:
        dbapi_conn.rollback()


async def begin_as_writer(conn: AsyncConnection) -> None:
    """SQLite: take the writer's lock now, before reads whose rows the transaction rewrites.
    `FOR UPDATE` locks nothing there, and its driver opens a transaction only at the first
    write, so another connection could commit between the read and the write. A transaction the
    driver has open already wrote (or began as the writer): it holds the lock. PostgreSQL: no-op."""
    if conn.dialect.name != "sqlite":
        return
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if not driver.in_transaction:
        await conn.exec_driver_sql("BEGIN IMMEDIATE")


async def open_savepoint(conn: AsyncConnection) -> AsyncTransaction:
    """A SAVEPOINT inside the connection's transaction. SQLite's driver opens its transaction
    only before a write, and a SAVEPOINT outside one *is* a transaction: its RELEASE would commit
    what it holds, and a later rollback of the whole would undo none of it. So on SQLite the
    transaction is begun first (as `billing/charging.py` does before its own savepoint), and as a
    writer (`BEGIN IMMEDIATE`): a plain `BEGIN` takes a read snapshot at the group's first read,
    and a write after another connection's commit would find it stale, refused at once
    ("database is locked", busy timeout or not). As a writer the group queues behind the others,
    as single writes do."""
    await begin_as_writer(conn)
    return await conn.begin_nested()


_INT64_MAX = 2**63 - 1


def read_jsonb(text: str) -> Any:
    """JSON as PostgreSQL gives it back. JSONB writes a float such as 1e20 back as the digits of
    a whole number: the standard parser read it as an integer no JSON encoder here can write (a
    500 on every later read). orjson reads a whole number past 2**64 - 1 as the float it was
    stored as, but one from 2**63 on (1e19) as an integer past the signed 64 bits every input
    here holds to: a settings document GET answered was refused by PUT. Those are floats too,
    as SQLite's JSON gives them back. The walk visits each container once (a text scan for long
    digit runs cost ten times the parse of a page of records)."""
    value = orjson.loads(text)
    if type(value) is int:
        return float(value) if value > _INT64_MAX else value
    if type(value) is not dict and type(value) is not list:
        return value
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        items = node.items() if type(node) is dict else enumerate(node)
        big = None
        for key, item in items:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append(item)
            elif kind is int and item > _INT64_MAX:
                big = [] if big is None else big
                big.append(key)
        for key in big or ():
            node[key] = float(node[key])
    return value


def make_engine(
    url: str, *, pool: bool = True, pool_size: int = 0, timeout: float | None = None
) -> AsyncEngine:
    """Create the engine; SQLite gets WAL, foreign keys and a busy timeout on every connection.

    `pool_size` (0: the backend's default) bounds the connections a process holds. On SQLite
    each one is a thread of aiosqlite's, and one writer works at a time anyway, so few go a long
    way (more of them only add thread switches under load).

    `timeout` (PostgreSQL; the server's engine, not the CLI's migrations) bounds a connect and
    each statement's answer: a server that stops answering (a stalled network, a failover in
    progress) fails the request with a 503 (`_timed_out`) instead of holding it forever."""
    kwargs: dict[str, Any] = {}
    sqlite = url.startswith("sqlite")
    if not pool:
        kwargs["poolclass"] = NullPool
    elif sqlite:
        size = pool_size or SQLITE_POOL_SIZE
        kwargs.update(pool_size=size, max_overflow=size, pool_reset_on_return=None)
    else:
        size = pool_size or 10
        # No `pool_pre_ping`: it costs a round trip on every checkout (most priced gateway
        # calls check one out); `_drop_closed` does its work for free.
        kwargs.update(pool_size=size, max_overflow=2 * size)
    if not sqlite:
        kwargs["json_deserializer"] = read_jsonb
        if timeout is not None:
            kwargs["connect_args"] = {"timeout": timeout, "command_timeout": timeout}
    engine = create_async_engine(url, **kwargs)
    if sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if pool:
            event.listen(engine.sync_engine.pool, "reset", _sqlite_reset)
        event.listen(engine.sync_engine, "handle_error", _interrupt_cancelled)
    elif engine.dialect.name == "postgresql":
        pick = _postgresql_fold_collation(engine.dialect)
        event.listen(engine.sync_engine, "first_connect", pick)
        if pool:
            event.listen(engine.sync_engine.pool, "checkout", _drop_closed)
        event.listen(engine.sync_engine, "handle_error", _timed_out)
        event.listen(engine.sync_engine, "do_connect", _connect)
    return engine


def _drop_closed(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
    """Replace a pooled PostgreSQL connection the server has closed (a terminated backend, a
    restart, an idle timeout) before it is handed out. asyncpg notices the close when it comes,
    off any request, so this costs no round trip where a pre-ping costs one per checkout. A
    connection lost without the server closing it (its host gone) fails its next statement
    instead: that request answers 503 (`database_refusal`), and SQLAlchemy replaces every
    connection pooled before it."""
    if dbapi_conn.driver_connection.is_closed():
        raise DisconnectionError("the server closed the connection")


def interrupt_sqlite(driver: Any) -> None:
    """Interrupt the statement an aiosqlite connection's thread is running (none: a no-op).
    Cancelling the task that awaits it stops only the wait; `sqlite3.Connection.interrupt` is
    safe from any thread, and aiosqlite keeps that connection as `_conn`."""
    try:
        connection = driver._conn
    except ValueError:  # closed already
        return
    connection.interrupt()


def _interrupt_cancelled(context: ExceptionContext) -> None:
    """SQLite: a statement whose task was cancelled (its call's deadline passed) stops now.
    SQLAlchemy then closes the connection, which would otherwise wait for the statement to
    finish on aiosqlite's thread: the call would outlive its budget, holding a pooled
    connection (or the writer's lock) all the while."""
    connection = context.connection
    if not isinstance(context.original_exception, asyncio.CancelledError) or (
        connection is None or connection.invalidated
    ):
        return
    driver = connection.connection.driver_connection
    if driver is not None:
        interrupt_sqlite(driver)


def _timed_out(context: ExceptionContext) -> BaseException | None:
    """asyncpg's timeout (a connect or a statement past `make_engine`'s `timeout`), which
    SQLAlchemy neither wraps nor takes for a disconnect: the connection is dropped (a late
    answer could still come on it; the pool's other connections are left alone, a statement
    may only have waited for a lock), and the request answers 503."""
    if isinstance(context.original_exception, TimeoutError):
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = False
        return DatabaseUnavailableError()
    return None


def _connect(dialect: Dialect, _record: Any, cargs: Any, cparams: Any) -> Any:
    """A connect past the timeout is a 503 too: asyncpg's timeout would reach the edge as it is
    (SQLAlchemy passes a connect's errors on untouched unless they are the driver's)."""
    try:
        return dialect.connect(*cargs, **cparams)
    except TimeoutError as exc:
        raise DatabaseUnavailableError() from exc


def database_refusal(exc: BaseException) -> UnavailableError | None:
    """The 503 a request answers, on either edge, for a database error that is none of its own
    doing; None for any other error. Its connection went away under a statement or a commit
    (SQLAlchemy has already invalidated it and the pool's older connections, so the next
    checkout connects anew; the server rolls back what it held, unless it was lost during the
    commit itself, which may have gone through), or no pooled connection came free within the
    pool's timeout (all held by other requests: `database_busy`)."""
    if isinstance(exc, PoolTimeoutError):
        return DatabaseBusyError()
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return DatabaseUnavailableError()
    return None


# How long a stopping process waits for connections still out (a call finishing) to come back.
DISPOSE_GRACE_SECONDS = 2.0
_DISPOSE_POLL_SECONDS = 0.01


async def dispose_engine(engine: AsyncEngine, grace: float = DISPOSE_GRACE_SECONDS) -> None:
    """Close the engine's connections once those still out (a call finishing) are back, or
    `grace` has passed: `dispose` closes only the pooled ones, and one returned after it goes
    back to the dropped pool, left open there (a socket, aiosqlite's thread) until the collector
    finds it. So do those checked out while `dispose` runs (it awaits each close: a background
    task gets the dropped pool's connection) or after it (from the pool it put in place, which
    nothing disposes): from now on, every connection given back to either pool is closed."""
    pool = engine.pool
    out = getattr(pool, "checkedout", lambda: 0)  # NullPool keeps none
    for _ in range(round(grace / _DISPOSE_POLL_SECONDS)):
        if out() <= 0:
            break
        await asyncio.sleep(_DISPOSE_POLL_SECONDS)
    # Before `dispose`: the pool it puts in place copies the dropped one's listeners.
    event.listen(pool, "checkin", _close_returned)
    await engine.dispose()


def _close_returned(_dbapi_conn: Any, record: Any) -> None:
    """A connection given back to a disposed engine's pool is closed, not kept (the record stays
    pooled: checked out again, it opens a new connection)."""
    record.invalidate()


_AFTER_COMMIT = "apiforge.after_commit"


async def lock_rows(session: AsyncSession, model: Any, *where: ColumnElement[bool]) -> int:
    """Lock `model`'s rows matching `where` until commit, to serialise a check and the write it
    guards: a no-op UPDATE (of `updated_at`, set explicitly so `onupdate` doesn't fire) locks
    the rows on PostgreSQL and takes the database's write lock on SQLite. Answers how many rows
    it found (0: they are gone)."""
    result = await session.execute(
        update(model)
        .where(*where)
        .values(updated_at=model.updated_at)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def after_commit(session: AsyncSession, action: Callable[[], None]) -> None:
    """Run `action` when this session's transaction commits (not if it rolls back): per-process
    caches forget what a change touched only once other connections can read the change, so a
    concurrent reader cannot cache the old state again after the forgetting."""
    session.sync_session.info.setdefault(_AFTER_COMMIT, []).append(action)


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    session.info.pop(_AFTER_ROLLBACK, None)
    for action in session.info.pop(_AFTER_COMMIT, ()):
        action()


_AFTER_ROLLBACK = "apiforge.after_rollback"


def after_rollback(session: AsyncSession, action: Callable[[], None]) -> None:
    """Run `action` when this session's transaction rolls back instead of committing: undo an
    effect outside the database made for it (the bytes of an upload already moved into place)."""
    session.sync_session.info.setdefault(_AFTER_ROLLBACK, []).append(action)


@event.listens_for(Session, "after_soft_rollback")
def _run_after_rollback(session: Session, previous: SessionTransaction) -> None:
    if previous.parent is None:  # the whole transaction, not a savepoint or a failed flush
        for action in session.info.pop(_AFTER_ROLLBACK, ()):
            action()


class TransactionEnd(Protocol):
    """Who reports the end of a transaction: a gateway call's or workflow's connection
    (`core/lazydb.py` `LazyConnection`), or a session's (`SessionEnd`)."""

    def on_end(self, action: Callable[[bool], None]) -> None:
        """Run `action(committed)` once, when the transaction open now ends: `True` once it has
        committed (or may have: a commit that failed midway), `False` when it rolled back."""
        ...


class SessionEnd:
    """`TransactionEnd` of a session's transaction, through `after_commit`/`after_rollback`."""

    __slots__ = ("session",)

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def on_end(self, action: Callable[[bool], None]) -> None:
        once = _Once(action)  # a rollback leaves its commit action behind, unrun: never run it
        after_commit(self.session, partial(once, True))
        after_rollback(self.session, partial(once, False))


class _Once:
    __slots__ = ("action",)

    def __init__(self, action: Callable[[bool], None]) -> None:
        self.action: Callable[[bool], None] | None = action

    def __call__(self, committed: bool) -> None:
        action, self.action = self.action, None
        if action is not None:
            action(committed)


async def end_reads(session: AsyncSession) -> None:
    """End a transaction that has only read so far, so that a long wait after it (an upload
    streaming in) holds neither a pooled connection nor a database snapshot (which would keep
    SQLite's WAL from being checkpointed). The objects read are detached and stay readable; the
    next statement begins a new transaction. Call it before any write: a flushed change would be
    rolled back."""
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("end_reads() with pending changes")
    session.expunge_all()
    await session.rollback()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=True)


async def session_scope(factory: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One unit of work: commit when the body finishes, roll back on any error."""
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException as exc:
            # Some refusals must persist what they did (e.g. revoking a token family on reuse).
            if getattr(exc, "keep_changes", False):
                await session.commit()
            else:
                await session.rollback()
            raise


# The same unit of work as a context manager: errors are thrown *into* it, so `keep_changes`
# refusals commit (iterating `session_scope` with `async for` would only close it on error).
unit_of_work = asynccontextmanager(session_scope)
