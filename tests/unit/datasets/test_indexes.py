"""Partial expression indexes: built and dropped with the fields, and used by the hot queries."""

import operator
import random
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.datasets.models import Record
from apiforge.datasets.sql import existing_indexes, field_expression, sync_indexes
from apiforge.datasets.store import RecordStore
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id
from tests.unit.datasets._support import Tenants


@contextmanager
def captured(connection: AsyncConnection) -> Iterator[list[tuple[str, Any]]]:
    """The statements (as sent to the driver, with their parameters) run inside the block."""
    statements: list[tuple[str, Any]] = []

    def listener(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, _m: Any) -> None:
        statements.append((statement, params))

    engine = connection.sync_engine
    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", listener)


async def plan(connection: AsyncConnection, statement: str, params: Any) -> str:
    prefix = "EXPLAIN QUERY PLAN " if connection.dialect.name == "sqlite" else "EXPLAIN "
    rows = (await connection.exec_driver_sql(prefix + statement, params)).all()
    return "\n".join(" ".join(str(c) for c in row) for row in rows)


async def test_indexes_follow_the_fields(tenants: Tenants, connection: AsyncConnection) -> None:
    posts = await tenants.new_collection(connection)
    names = await existing_indexes(connection, posts.id)
    # `published`, `views` are indexed, `slug` unique; nothing else is.
    assert sorted(n[:2] for n in names) == ["ix", "ix", "ux"]
    fewer = posts.build(
        id=posts.id,
        app_id=posts.app_id,
        name=posts.name,
        fields=[{"name": "slug", "type": "string", "unique": True}],
    )
    await sync_indexes(connection, fewer)
    kept = await existing_indexes(connection, posts.id)
    assert len(kept) == 1
    assert kept <= names
    none = posts.build(id=posts.id, app_id=posts.app_id, name=posts.name, fields=[])
    await sync_indexes(connection, none)
    assert await existing_indexes(connection, posts.id) == set()


async def test_filtered_newest_first_page_with_total_uses_the_partial_index(
    tenants: Tenants, connection: AsyncConnection
) -> None:
    """10,000 records: `published = true`, newest first, 20 per page with the total count.
    Both the page and the count read the collection's partial index on (partition, published,
    created_at, id) — no table scan, no sort step."""
    posts = await tenants.new_collection(connection)
    other = await tenants.new_collection(connection, "drafts")
    start = utcnow() - timedelta(days=30)
    rng = random.Random(7)
    rows: list[dict[str, Any]] = []
    for i in range(10_000):
        collection, partition = (
            (posts.id, tenants.a) if i % 10 else (other.id, tenants.b)  # noise elsewhere
        )
        rows.append(
            {
                "id": new_id(),
                "collection_id": collection,
                "partition": partition,
                "data": {"title": f"post {i}", "published": rng.random() < 0.5, "views": i},
                "version": 1,
                "size": 60,
                "created_at": start + timedelta(seconds=i),
                "updated_at": start + timedelta(seconds=i),
            }
        )
    await connection.execute(insert(Record), rows)
    await connection.execute(text("ANALYZE"))
    store = RecordStore(connection, tenants.cipher)
    published = field_expression(connection.dialect, posts.field("published"))  # type: ignore[arg-type]
    with captured(connection) as statements:
        page = await store.get_many(
            posts,
            tenants.a,
            where=operator.eq(published, True),
            sort=["-createdTime"],
            page_size=20,
        )
    expected = sum(1 for r in rows if r["collection_id"] == posts.id and r["data"]["published"])
    assert page["totalCount"] == expected
    assert len(page["list"]) == 20
    assert all(r["published"] for r in page["list"])
    times = [r["createdTime"] for r in page["list"]]
    assert times == sorted(times, reverse=True)
    assert len(statements) == 2
    page_sql, count_sql = statements
    if connection.dialect.name == "postgresql":
        # Here 40% of the whole table matches, so PostgreSQL rightly counts with a sequential
        # scan; forbidding that shows the count *can* use the index (its predicate and
        # expression match), which it does once the table holds other tenants' data too.
        await connection.execute(text("SET LOCAL enable_seqscan = off"))
    for sql, params in (page_sql, count_sql):
        text_plan = await plan(connection, sql, params)
        print(text_plan)  # shown with `pytest -s`; quoted in the report
        assert f"_rec_{posts.id}_" in text_plan  # one of the collection's partial indexes
        assert "TEMP B-TREE" not in text_plan  # SQLite: no sort step
        assert "Seq Scan" not in text_plan
        assert "Sort" not in text_plan
