"""Alembic environment: async engines, one linear history, safe timeouts on PostgreSQL."""

import asyncio
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from apiforge.core.db import UTCDateTime, make_engine
from apiforge.models import metadata


def _render_item(kind: str, obj: Any, _ctx: AutogenContext) -> str | Literal[False]:
    """Render our portable column types as plain SQLAlchemy so migrations never import models."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


# pg_advisory_xact_lock key of `apiforge db upgrade` (any constant bigint, unique to apiforge).
MIGRATION_LOCK_KEY = 0x61706966_6F726765  # "apiforge"


def _include_object(
    obj: Any, name: str | None, kind: str, _reflected: bool, _compare_to: Any
) -> bool:
    """Per-collection record indexes are created at run time by `datasets.sql`, not migrations."""
    return not (kind == "index" and name is not None and name.startswith(("ix_rec_", "ux_rec_")))


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Every node of a cluster may run `apiforge db upgrade` as it starts: one at a time, the
        # others wait here (before lock_timeout applies) and then find the history applied.
        # The lock is held until this transaction, the whole upgrade, commits or rolls back.
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        connection.exec_driver_sql("SET lock_timeout = '5s'")
        connection.exec_driver_sql("SET statement_timeout = '60s'")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        # One transaction for the whole upgrade, SQLite's DDL included (its driver is set up
        # for it in `_sqlite_transactional_ddl`): PostgreSQL's already is one.
        transactional_ddl=True,
        compare_type=True,
        render_item=_render_item,
        include_object=_include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def _sqlite_transactional_ddl(engine: AsyncEngine) -> None:
    """Run the whole upgrade in one SQLite transaction, as on PostgreSQL, so a migration that
    fails or is killed midway leaves neither DDL nor data without its version stamp. SQLite's
    DDL is transactional, but Python's driver opens a transaction only before an INSERT, UPDATE
    or DELETE, so the DDL ahead of one committed on its own: the driver is told to open none,
    and the transaction is begun here, as the writer, at the connection's first statement."""

    @event.listens_for(engine.sync_engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        # Batch mode rebuilds a table to drop a column (copy, drop, rename); with foreign keys
        # enforced the drop cascades into the tables that reference it (downgrading 0008
        # deleted every workspace, app and session). Set before the transaction: in one it is
        # a no-op. (Set after make_engine's pragmas, which turn them on.)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=OFF")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


async def _online() -> None:
    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "", pool=False)
    if engine.dialect.name == "sqlite":
        _sqlite_transactional_ddl(engine)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"), target_metadata=metadata
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_online())
