"""Alembic environment: async engines, one linear history, safe timeouts on PostgreSQL."""

import asyncio
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy.engine import Connection

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
    elif connection.dialect.name == "sqlite":
        # Batch mode rebuilds a table to drop a column (copy, drop, rename); with foreign keys
        # enforced the drop cascades into the tables that reference it (downgrading 0008 deleted
        # every workspace, app and session). Set before any write: in a transaction it is a no-op.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        render_item=_render_item,
        include_object=_include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _online() -> None:
    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or "", pool=False)
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
