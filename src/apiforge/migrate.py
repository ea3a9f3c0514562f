"""Run the Alembic history programmatically (CLI, `make run`, tests)."""

import asyncio
import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config

from apiforge.core.db import make_engine, sqlite_file
from apiforge.core.settings import Settings

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


@contextmanager
def _sqlite_migration_lock(database_url: str) -> Iterator[None]:
    """One `upgrade` at a time per SQLite file: Alembic runs SQLite DDL outside a transaction, so
    two processes starting together (`make run` twice, a supervisor's workers) would both create
    the same tables. PostgreSQL serialises in `migrations/env.py` with an advisory lock."""
    path = sqlite_file(database_url)
    if path is None:
        yield
        return
    with open(f"{path}.migrate-lock", "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Apply the history; at `head`, also seal what earlier versions stored in clear (data
    that needs the server secret, which migrations don't have)."""
    if settings.is_sqlite:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    with _sqlite_migration_lock(url):
        command.upgrade(alembic_config(url), revision)
        if revision == "head":
            asyncio.run(_seal_stored_secrets(settings))


async def _seal_stored_secrets(settings: Settings) -> None:
    from apiforge.builder.signing import seal_stored_secrets

    engine = make_engine(settings.resolved_database_url, pool=False)
    try:
        async with engine.begin() as conn:
            await seal_stored_secrets(settings, conn)
    finally:
        await engine.dispose()


async def upgrade_async(settings: Settings) -> None:
    await asyncio.to_thread(upgrade, settings)
