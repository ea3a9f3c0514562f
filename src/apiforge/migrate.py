"""Run the Alembic history programmatically (CLI, `make run`, tests)."""

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config

from apiforge.core.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade(settings: Settings, revision: str = "head") -> None:
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.resolved_database_url), revision)


async def upgrade_async(settings: Settings) -> None:
    await asyncio.to_thread(upgrade, settings)
