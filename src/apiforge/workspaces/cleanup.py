"""What deleting workspaces must do besides the database's cascade."""

from collections.abc import Callable, Sequence
from functools import partial

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder.models import App
from apiforge.core.db import after_commit
from apiforge.datasets.models import Collection, Record
from apiforge.datasets.sql import drop_indexes


async def delete_leftovers(
    session: AsyncSession, workspace_ids: Sequence[str], app_changed: Callable[[str], None]
) -> None:
    """Before `workspace_ids` are deleted, what no foreign key takes with them: the records they
    wrote as callers of other workspaces' apps (partitioned by workspace id, no key), which would
    stay unreadable yet hold those collections' fields against type changes; the run-time
    indexes of their own collections (as deleting an app drops them); and, once committed, this
    node's cached apps of theirs."""
    if not workspace_ids:
        return
    await session.execute(
        delete(Record)
        .where(Record.partition.in_(workspace_ids))
        .execution_options(synchronize_session=False)
    )
    apps = await session.scalars(select(App.id).where(App.workspace_id.in_(workspace_ids)))
    app_ids = list(apps.all())
    if not app_ids:
        return
    connection = await session.connection()
    collection_ids = await session.scalars(
        select(Collection.id).where(Collection.app_id.in_(app_ids))
    )
    for collection_id in collection_ids.all():
        await drop_indexes(connection, collection_id)
    for app_id in app_ids:
        after_commit(session, partial(app_changed, app_id))
