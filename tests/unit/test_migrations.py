"""The Alembic history and the models must describe the same schema, on every backend."""

import asyncio
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi import FastAPI
from sqlalchemy import inspect, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from apiforge.core.db import make_engine, unit_of_work
from apiforge.core.settings import Settings
from apiforge.migrate import alembic_config
from apiforge.models import metadata
from apiforge.plans.models import Plan


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


async def test_models_match_migrations(app: FastAPI) -> None:
    async with app.state.engine.connect() as connection:
        diff = await connection.run_sync(_diff)
    assert diff == []


async def test_default_free_plan_is_seeded(app: FastAPI) -> None:
    async with unit_of_work(app.state.sessionmaker) as session:
        plans = (await session.scalars(select(Plan))).all()
    assert [(p.code, p.is_default) for p in plans] == [("free", True)]


def test_history_downgrades_and_upgrades_again(tmp_path: Any) -> None:
    settings = Settings(data_dir=tmp_path)
    config = alembic_config(settings.resolved_database_url)
    command.upgrade(config, "head")
    command.downgrade(config, "base")
    command.upgrade(config, "head")


def _schema(connection: Connection) -> tuple[dict[str, list[str]], tuple[str, ...]]:
    """Every table's columns, and the revision stamped."""
    found = inspect(connection)
    names = found.get_table_names()
    tables = {name: [c["name"] for c in found.get_columns(name)] for name in names}
    return tables, tuple(MigrationContext.configure(connection).get_current_heads())


async def _on(url: str, statement: str | None = None) -> Any:
    """Run `statement` (committed), then answer the schema as it is."""
    engine = make_engine(url, pool=False)
    try:
        async with engine.begin() as connection:
            if statement:
                await connection.exec_driver_sql(statement)
            return await connection.run_sync(_schema)
    finally:
        await engine.dispose()


def test_a_migration_failing_midway_leaves_the_schema_and_the_version_as_they_were(
    settings: Settings,
) -> None:
    """Alembic runs SQLite DDL outside a transaction: 0016 stopped at its second column (here
    already there, as a half-applied attempt or a hand-made change leaves it) kept its first
    one, unstamped, and every later upgrade then stopped at that column instead."""
    url = settings.resolved_database_url
    config = alembic_config(url)
    command.downgrade(config, "0015")
    before = asyncio.run(_on(url, "ALTER TABLE app_versions ADD COLUMN revision INTEGER"))
    assert before[1] == ("0015",)
    with pytest.raises(DBAPIError, match="revision"):
        command.upgrade(config, "head")
    assert asyncio.run(_on(url)) == before
    # The cause removed, the same upgrade goes through.
    asyncio.run(_on(url, "ALTER TABLE app_versions DROP COLUMN revision"))
    command.upgrade(config, "head")
    assert asyncio.run(_on(url))[1] == ("0022",)


def test_an_upgrade_over_several_revisions_is_applied_whole_or_not_at_all(
    settings: Settings,
) -> None:
    """As on PostgreSQL, where the whole upgrade is one transaction: 0014 applied, 0015
    failing (its table already there) leaves 0014's columns unapplied too."""
    url = settings.resolved_database_url
    config = alembic_config(url)
    command.downgrade(config, "0013")
    before = asyncio.run(_on(url, "CREATE TABLE welcome_grants (account_id VARCHAR(26))"))
    with pytest.raises(DBAPIError, match="welcome_grants"):
        command.upgrade(config, "head")
    assert asyncio.run(_on(url)) == before
    assert before[1] == ("0013",)
