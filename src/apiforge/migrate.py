"""Run the Alembic history programmatically (CLI, `make run`, tests)."""

import asyncio
import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

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
    """One `upgrade` at a time per SQLite file (`make run` twice, a supervisor's workers): each
    is one transaction that takes the write lock first (`migrations/env.py`), but another would
    wait for that lock only SQLite's busy timeout (5 s), less than a long upgrade takes.
    PostgreSQL serialises in `migrations/env.py` with an advisory lock."""
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
        settings.create_data_dir()
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


def database_missing(settings: Settings) -> str | None:
    """Why a command that works on the data must not open the database: its embedded file does
    not exist (opening it would create an empty one, and the command then failed on "no such
    table", pointing nowhere near `db upgrade` in the right place). None when it may."""
    path = sqlite_file(settings.resolved_database_url)
    if path is None or Path(path).exists():
        return None
    return f"no database at {path}; run `apiforge db upgrade` first (or check APIFORGE_DATA_DIR)"


async def pending_migrations(settings: Settings) -> list[str]:
    """This release's migrations the database has not applied yet, newest first (so `serve`
    can refuse a schema that would answer every request with a 500). Empty at head, and also
    when a newer release migrated further: each migration keeps the previous release serving."""
    url = settings.resolved_database_url
    script = ScriptDirectory.from_config(alembic_config(url))
    path = sqlite_file(url)
    # Don't create an empty file just to look into it.
    if path is not None and not await asyncio.to_thread(Path(path).exists):
        return [revision.revision for revision in script.walk_revisions()]
    engine = make_engine(url, pool=False)
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(_current_heads)
    finally:
        await engine.dispose()
    known = {revision.revision for revision in script.walk_revisions()}
    if not set(current) <= known:
        return []
    return [revision.revision for revision in script.iterate_revisions("heads", current or "base")]


def _current_heads(connection: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


async def upgrade_async(settings: Settings) -> None:
    await asyncio.to_thread(upgrade, settings)
