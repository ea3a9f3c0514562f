"""Big collections for tests of expensive reads: bulk-filled notes, SQLite's case foldings
counted, and the queries PostgreSQL is running for a test's own database."""

import asyncio
import sqlite3
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine

import apiforge.core.db
from apiforge.core.db import sqlite_file
from apiforge.tools.filters import sqlite_lower
from tests.conftest import DATABASE_URL, _pg_dsn

RECORDS = 50_000  # enough for the filter below to take far longer than a test's budget
# A literal filter (on the gateway a prepared page: on SQLite the shared reader runs it) that
# folds the case of every record 64 times; the same through expressions: SLOW_EXPRESSION in
# test_review_slow_queries.py.
SLOW_LITERAL = {"_or": [{"text": {"_icontains": f"zz{i}"}} for i in range(64)]}


async def fill_notes(app: FastAPI) -> None:
    """`RECORDS` more notes in the partition of the one note written through the gateway."""
    path = sqlite_file(app.state.settings.resolved_database_url)
    if path is not None:
        with sqlite3.connect(path) as db:
            db.execute(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                "INSERT INTO records (id, collection_id, partition, data, version, size, "
                "created_at, updated_at) SELECT printf('%026d', i), collection_id, partition, "
                "json_object('text', 'note ' || i), 1, 20, created_at, updated_at "
                "FROM n, (SELECT * FROM records LIMIT 1)",
                (RECORDS,),
            )
        return
    async with app.state.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO records (id, collection_id, partition, data, version, size, "
                "created_at, updated_at) SELECT lpad(i::text, 26, '0'), collection_id, "
                "partition, jsonb_build_object('text', 'note ' || i), 1, 20, created_at, "
                "updated_at FROM generate_series(1, :n) i, (SELECT * FROM records LIMIT 1) r"
            ),
            {"n": RECORDS},
        )


async def active_queries(database: str) -> list[str]:
    """The queries running now on `database` (a test's own), this one's excepted."""
    conn = await asyncpg.connect(_pg_dsn(DATABASE_URL))
    try:
        rows = await conn.fetch(
            "SELECT query FROM pg_stat_activity WHERE datname = $1 AND state = 'active'"
            " AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await conn.close()
    return [row[0] for row in rows]


def own_database(app: FastAPI) -> str:
    """The name of the test's own PostgreSQL database (tests/conftest.py), checked to be one."""
    name = make_url(str(app.state.engine.url)).database
    assert name is not None
    assert name.startswith("apiforge_t_")  # the test's own database, never another's
    return name


async def no_query_left(database: str) -> None:
    """Wait (a little: a cancel request reaches the server on a connection of its own, far
    sooner than the slow queries end) until nothing runs on `database`."""
    for _ in range(30):
        if not await active_queries(database):
            break
        await asyncio.sleep(0.01)
    assert await active_queries(database) == []


class Folds:
    """Counts SQLite's case foldings: one per record an `_icontains` condition reads."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, value: Any) -> Any:
        self.count += 1
        return sqlite_lower(value)


async def count_folds(monkeypatch: pytest.MonkeyPatch, engine: AsyncEngine) -> Folds:
    """The foldings of the connections `engine` opens from now on (its pool is emptied)."""
    folds = Folds()
    monkeypatch.setattr(apiforge.core.db, "sqlite_lower", folds)
    await engine.dispose()
    return folds
