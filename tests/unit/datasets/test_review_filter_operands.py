"""Filter operands answer alike on SQLite and PostgreSQL: whole doubles against integer fields
past 2**53, and ranges over the built-in `id` in a database whose collation is ICU English
(`tests/_icu.py`; SQLite keeps the session's database)."""

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.datasets.filtering import record_filter
from apiforge.datasets.store import RecordStore
from tests._icu import icu_template
from tests.unit.datasets._support import Tenants

BIG = 2**53 + 1  # 2.0**53 on PostgreSQL once compared as a double
FIELDS: list[dict[str, Any]] = [{"name": "n", "type": "integer", "indexed": True}]


@pytest.fixture(scope="module")
def template_database(template_database: str) -> Iterator[str]:
    yield from icu_template(template_database)


async def _count(store: RecordStore, schema: Any, partition: str, tree: Any) -> int:
    where = record_filter(store.connection.dialect, schema, tree)
    return await store.count(schema, partition, where)


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        ({"n": {"_eq": float(2**53)}}, 0),
        ({"n": {"_gt": float(2**53)}}, 2),
        ({"n": {"_gte": float(2**53)}}, 2),
        ({"n": {"_in": [float(2**53), 1.0]}}, 1),
        ({"n": {"_between": [1.0, float(2**53)]}}, 1),
        ({"n": {"_lt": float(2**63)}}, 3),
        ({"n": {"_gte": float(2**63)}}, 0),
        ({"n": {"_gt": -float(2**63)}}, 3),
        ({"n": {"_lt": 1e300}}, 3),
        ({"n": {"_gt": 1.5}}, 2),
        ({"n": {"_in": [2**53, 0.5]}}, 0),  # an integer and a fraction: no list of doubles
        ({"n": {"_in": [BIG, 0.5]}}, 1),
        ({"n": {"_nin": [2**53, 0.5]}}, 3),
        ({"n": {"_nin": [BIG, 1e300]}}, 2),
    ],
)
async def test_whole_doubles_compare_with_integer_fields_exactly(
    store: RecordStore,
    tenants: Tenants,
    connection: AsyncConnection,
    tree: Any,
    expected: int,
) -> None:
    """`1e16`, `2.0**53` (JSON numbers with an exponent or a fraction, or an expression's double)
    matched integers a double rounds to them on PostgreSQL only."""
    numbers = await tenants.new_collection(connection, "numbers", FIELDS)
    for n in (1, BIG, 2**63 - 1):
        await store.insert(numbers, tenants.a, {"n": n})
    assert await _count(store, numbers, tenants.a, tree) == expected
    prepared = store.prepare_page(numbers, where=record_filter(connection.dialect, numbers, tree))
    assert prepared is not None  # the gateway's path for a literal filter
    page = await prepared.run(store, tenants.a, 1, 10)
    assert page["totalCount"] == expected


async def test_id_ranges_compare_in_code_point_order(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    """Ids are lower-case base 32: an upper-case cursor, or "~" as an upper bound, was compared
    in the database's collation on PostgreSQL ("A" sorts with "a" in en-US)."""
    posts = await tenants.new_collection(connection, "posts", [{"name": "t", "type": "string"}])
    ids = sorted([(await store.insert(posts, tenants.a, {"t": str(i)}))["id"] for i in range(4)])
    assert await _count(store, posts, tenants.a, {"id": {"_gt": ids[1].upper()}}) == 4
    assert await _count(store, posts, tenants.a, {"id": {"_lt": "~"}}) == 4
    assert await _count(store, posts, tenants.a, {"id": {"_lte": ids[3].upper()}}) == 0
    assert await _count(store, posts, tenants.a, {"id": {"_between": ["0", "~"]}}) == 4
    assert await _count(store, posts, tenants.a, {"id": {"_gte": ids[2]}}) == 2
    assert await _count(store, posts, tenants.a, {"id": {"_eq": ids[2].upper()}}) == 0
    assert await _count(store, posts, tenants.a, {"id": {"_in": ids[:3]}}) == 3
    # Equality keeps comparing the column itself, which the primary key index serves.
    equal = record_filter(connection.dialect, posts, {"id": {"_in": ids[:3], "_neq": ids[0]}})
    assert "COLLATE" not in str(equal.compile(dialect=connection.dialect))
