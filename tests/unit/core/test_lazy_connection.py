"""`LazyConnection.let_go` against the test database (SQLite, or PostgreSQL): a call's pooled
connection goes back before a wait only when nothing of the call is pending on it, and a call
that wrote keeps its transaction, whose effects then commit (or roll back) whole."""

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from apiforge.core.db import make_engine
from apiforge.core.lazydb import LazyConnection
from apiforge.core.settings import Settings


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    db = make_engine(settings.resolved_database_url)
    async with db.connect() as conn:
        await conn.execute(text("CREATE TABLE lazy_t (x INTEGER)"))
        await conn.commit()
    yield db
    await db.dispose()


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM lazy_t"))).scalar_one())


async def test_a_call_that_only_read_gives_its_connection_back_before_a_wait(
    engine: AsyncEngine,
) -> None:
    conn = LazyConnection(engine)
    await conn.execute(text("SELECT count(*) FROM lazy_t"))  # a cache miss's read
    assert conn.started
    await conn.let_go(before_wait=True)
    assert not conn.started
    assert engine.pool.checkedout() == 0
    await conn.execute(text("INSERT INTO lazy_t VALUES (1)"))  # the next statement: another
    await conn.commit()
    await conn.close()
    assert await _count(engine) == 1


async def test_a_call_that_wrote_keeps_its_transaction_through_a_wait(
    engine: AsyncEngine,
) -> None:
    conn = LazyConnection(engine)
    await conn.execute(text("INSERT INTO lazy_t VALUES (1)"))
    await conn.let_go(before_wait=True)
    assert conn.started  # kept: the write is part of the call's transaction
    await conn.execute(text("INSERT INTO lazy_t VALUES (2)"))
    await conn.rollback()  # the call failed after its wait: nothing of it stays
    await conn.close()
    assert await _count(engine) == 0

    conn = LazyConnection(engine)
    await conn.execute(text("INSERT INTO lazy_t VALUES (3)"))
    await conn.let_go(before_wait=True)
    await conn.commit()  # the call succeeded: its write commits
    await conn.close()
    assert await _count(engine) == 1


async def test_a_savepoint_keeps_the_connection(engine: AsyncEngine) -> None:
    conn = LazyConnection(engine)
    await conn.execute(text("SELECT 1"))
    nested = await conn.begin_nested()
    await conn.let_go(before_wait=True)
    assert conn.started
    await nested.rollback()
    await conn.rollback()
    await conn.close()


async def test_before_the_steps_only_sqlite_lets_go(engine: AsyncEngine) -> None:
    """Before the steps (no wait in sight) PostgreSQL keeps the connection: checking one out
    again would cost a ping; SQLite gives a read-only one back (it costs nothing there)."""
    conn = LazyConnection(engine)
    await conn.execute(text("SELECT count(*) FROM lazy_t"))
    await conn.let_go()
    assert conn.started == (engine.dialect.name != "sqlite")
    await conn.rollback()
    await conn.close()
