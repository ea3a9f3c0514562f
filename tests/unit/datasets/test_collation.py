"""String fields order, compare and fold case the same on SQLite and on PostgreSQL, whatever the
PostgreSQL database's collation: here (on PostgreSQL) a database whose default collation is ICU
English, which sorts "a" before "Z" and lower-cases "ΟΔΟΣ" to "οδος", where SQLite answers in
code point order and folds letter by letter."""

import asyncio
import importlib.util
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from alembic import command
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apiforge.core.settings import Settings
from apiforge.datasets.filtering import record_filter
from apiforge.datasets.sql import desired_indexes, existing_indexes, sync_indexes
from apiforge.datasets.store import RecordStore
from apiforge.migrate import MIGRATIONS, alembic_config
from tests._icu import icu_template
from tests.conftest import DATABASE_URL
from tests.unit.datasets._support import Tenants
from tests.unit.datasets.test_indexes import captured, plan

NAMES = ["Zoe", "adam", "Bob", "bob", "élan", "eve", "_x", "Émile", "10", "9"]
FIELDS: list[dict[str, Any]] = [
    {"name": "name", "type": "string", "indexed": True},
    {"name": "code", "type": "string", "unique": True},
    {"name": "label", "type": "string"},
]


@pytest.fixture(scope="module")
def template_database(template_database: str) -> Iterator[str]:
    """On PostgreSQL, a migrated template in ICU `en-US` (`tests/_icu.py`)."""
    yield from icu_template(template_database)


async def _people(store: RecordStore, tenants: Tenants, connection: AsyncConnection) -> Any:
    people = await tenants.new_collection(connection, "people", FIELDS)
    for i, name in enumerate(NAMES):
        await store.insert(people, tenants.a, {"name": name, "code": name, "label": f"{name}{i}"})
    return people


async def test_string_fields_sort_in_code_point_order(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    people = await _people(store, tenants, connection)
    for field in ("name", "code", "label"):  # indexed, unique, plain
        page = await store.get_many(people, tenants.a, sort=[field], page_size=50)
        assert [r[field] for r in page["list"]] == sorted(r[field] for r in page["list"])
        page = await store.get_many(people, tenants.a, sort=[f"-{field}"], page_size=50)
        got = [r[field] for r in page["list"]]
        assert got == sorted(got, reverse=True)
    rows = await store.aggregate(
        people, tenants.a, metrics={"low": ("min", "name"), "high": ("max", "name")}
    )
    assert rows == [{"low": min(NAMES), "high": max(NAMES)}]


async def test_string_comparisons_follow_code_point_order(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    people = await _people(store, tenants, connection)
    dialect = connection.dialect
    records = (await store.get_many(people, tenants.a, page_size=50))["list"]
    tests = {"_lt": "__lt__", "_gte": "__ge__", "_gt": "__gt__", "_lte": "__le__"}
    for op, value in (("_lt", "a"), ("_gte", "Z"), ("_gt", "bob"), ("_lte", "9")):
        for field in ("name", "label"):
            where = record_filter(dialect, people, {field: {op: value}})
            page = await store.get_many(people, tenants.a, where=where, page_size=50)
            got = sorted(r["name"] for r in page["list"])
            expected = sorted(r["name"] for r in records if getattr(r[field], tests[op])(value))
            assert got == expected, (op, value, field)
    where = record_filter(dialect, people, {"name": {"_between": ["B", "Z"]}})
    page = await store.get_many(people, tenants.a, where=where, page_size=50)
    assert sorted(r["name"] for r in page["list"]) == ["Bob"]


async def test_icontains_folds_case_as_sqlite_does(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    """Letter by letter (`filters.sqlite_lower`): a final sigma folds as any other, "İ" to "i";
    "É" to "é" although the field sorts by code point (COLLATE "C" alone folds ASCII only)."""
    people = await tenants.new_collection(connection, "people", FIELDS)
    for name in ("ΟΔΟΣ", "İstanbul", "ÉCOLE", "plain"):
        await store.insert(people, tenants.a, {"name": name})
    dialect = connection.dialect
    for needle, expected in (
        ("οδοσ", ["ΟΔΟΣ"]),
        ("istanbul", ["İstanbul"]),
        ("école", ["ÉCOLE"]),
        ("PLAIN", ["plain"]),
    ):
        where = record_filter(dialect, people, {"name": {"_icontains": needle}})
        page = await store.get_many(people, tenants.a, where=where, page_size=50)
        assert [r["name"] for r in page["list"]] == expected, needle


async def test_an_indexed_string_field_sorts_and_filters_through_its_index(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    people = await _people(store, tenants, connection)
    await connection.execute(text("ANALYZE"))
    if connection.dialect.name == "postgresql":
        # A ten-row table is cheaper to scan: forbidding that shows the index *can* serve the
        # query (its expression, collation and predicate match).
        await connection.execute(text("SET LOCAL enable_seqscan = off"))
    where = record_filter(connection.dialect, people, {"name": {"_gte": "Bob"}})
    with captured(connection) as statements:
        await store.get_many(people, tenants.a, where=where, sort=["name"], with_total=False)
        await store.get_many(
            people,
            tenants.a,
            where=record_filter(connection.dialect, people, {"code": {"_eq": "adam"}}),
            with_total=False,
        )
    plans = [await plan(connection, sql, params) for sql, params in statements]
    print("\n\n".join(plans))  # shown with `pytest -s`
    for text_plan in plans:
        assert f"_rec_{people.id}_" in text_plan
        assert "Seq Scan" not in text_plan
    assert "Sort" not in plans[0]  # PostgreSQL reads the index in order


@pytest.mark.skipif(not DATABASE_URL, reason="SQLite's indexes compare text as bytes already")
async def test_upgrade_rebuilds_record_indexes_in_code_point_order(
    settings: Settings, tenants: Tenants
) -> None:
    """Indexes built before 0017 carry the database's collation; the upgrade rebuilds them
    under the same names with COLLATE "C" (the queries' collation)."""
    engine = tenants.app.state.engine
    async with engine.begin() as connection:
        people = await _people(RecordStore(connection, tenants.cipher), tenants, connection)
        names = await existing_indexes(connection, people.id)
    assert len(names) == 2
    config = alembic_config(settings.resolved_database_url)
    await asyncio.to_thread(command.downgrade, config, "0016")
    assert set((await _collations(engine, names)).values()) == {"default"}
    await asyncio.to_thread(command.upgrade, config, "head")
    assert set((await _collations(engine, names)).values()) == {"C"}
    async with engine.begin() as connection:
        assert await existing_indexes(connection, people.id) == names
        where = record_filter(connection.dialect, people, {"code": {"_lt": "a"}})
        page = await RecordStore(connection, tenants.cipher).get_many(
            people, tenants.a, where=where, page_size=50
        )
    assert sorted(r["code"] for r in page["list"]) == sorted(n for n in NAMES if n < "a")


async def _collations(engine: AsyncEngine, names: set[str]) -> dict[str, str]:
    """Index name -> collation of its field column (the second)."""
    async with engine.connect() as connection:
        return await _collations_on(connection, names)


async def _collations_on(connection: AsyncConnection, names: set[str]) -> dict[str, str]:
    rows = await connection.execute(
        text(
            "SELECT c.relname, co.collname FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_collation co ON co.oid = i.indcollation[1] "
            "WHERE c.relname = ANY(:names)"
        ),
        {"names": sorted(names)},
    )
    return {str(name): str(collation) for name, collation in rows.all()}


@pytest.mark.skipif(not DATABASE_URL, reason="SQLite's indexes compare text as bytes already")
async def test_sync_rebuilds_an_index_an_older_node_built_in_the_default_collation(
    tenants: Tenants, connection: AsyncConnection
) -> None:
    """In a rolling upgrade a node on the previous release may save the schema after 0017 ran,
    building a text-field index in the database's collation under the name the new code
    expects: the next sync rebuilds it in "C" (else no query of the new code can use it)."""
    people = await tenants.new_collection(connection, "people", FIELDS)
    desired = desired_indexes(connection.dialect, people)
    for name, ddl in desired.items():  # as the previous release spelled them
        await connection.execute(text(f"DROP INDEX {name}"))
        await connection.execute(text(ddl.replace(' COLLATE "C"', "")))
    assert set((await _collations_on(connection, set(desired))).values()) == {"default"}
    with captured(connection) as statements:
        await sync_indexes(connection, people)
    assert set((await _collations_on(connection, set(desired))).values()) == {"C"}
    assert await existing_indexes(connection, people.id) == set(desired)
    catalog = [s for s, _ in statements if "pg_index" in s or "pg_indexes" in s]
    assert len(catalog) == 1  # one catalog query per sync
    with captured(connection) as statements:
        await sync_indexes(connection, people)  # in "C" now: nothing to do
    assert not [s for s, _ in statements if "INDEX" in s and "pg_ind" not in s]


def _migration_0017() -> ModuleType:
    path = MIGRATIONS / "versions" / "0017_record_index_collation.py"
    spec = importlib.util.spec_from_file_location("migration_0017", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not DATABASE_URL, reason="SQLite's indexes compare text as bytes already")
async def test_upgrade_rebuilds_outlast_the_statement_timeout(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    """A rebuild reads all of `records`, which on a big table takes longer than the upgrade's
    statement timeout (env.py: 60 s); 0017 lifts it for its rebuilds and restores it after. A
    field index whose expression sleeps stands in for the big table, a 50 ms timeout for 60 s."""
    people = await tenants.new_collection(connection, "people", FIELDS)
    for name in ("a", "b", "c"):
        await store.insert(people, tenants.a, {"name": name})
    await connection.execute(
        text(
            "CREATE FUNCTION slow_text(t text) RETURNS text LANGUAGE plpgsql IMMUTABLE "
            "AS $$ BEGIN PERFORM pg_sleep(0.1); RETURN t; END $$"
        )
    )
    slow = f"ix_rec_{people.id}_slow"
    await connection.execute(
        text(
            f"CREATE INDEX {slow} ON records (\"partition\", (slow_text(data ->> 'name'))) "
            f"WHERE collection_id = '{people.id}'"
        )
    )
    assert await _collations_on(connection, {slow}) == {slow: "default"}
    await connection.execute(text("SET LOCAL statement_timeout = '50ms'"))
    migration = _migration_0017()

    def upgrade_0017(sync_connection: Connection) -> None:
        with Operations.context(MigrationContext.configure(sync_connection)):
            migration.upgrade()

    await connection.run_sync(upgrade_0017)
    assert await _collations_on(connection, {slow}) == {slow: "C"}
    assert (await connection.execute(text("SHOW statement_timeout"))).scalar() == "50ms"
