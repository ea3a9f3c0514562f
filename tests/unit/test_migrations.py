"""The Alembic history and the models must describe the same schema, on every backend."""

from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.engine import Connection

from apiforge.core.db import unit_of_work
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
