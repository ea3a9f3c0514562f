"""Big collections for tests of expensive reads: bulk-filled notes and the queries PostgreSQL is
running for a test's own database."""

import sqlite3

import asyncpg
from fastapi import FastAPI
from sqlalchemy import text

from apiforge.core.db import sqlite_file
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
