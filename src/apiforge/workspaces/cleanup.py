"""What deleting workspaces must do besides the database's cascade."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder.models import App
from apiforge.core.db import after_commit
from apiforge.datasets.models import Collection, Record
from apiforge.datasets.sql import drop_indexes


@dataclass(frozen=True, slots=True)
class Leftovers:
    """What no foreign key takes with deleted workspaces: the records they wrote as callers of
    other workspaces' apps (partitioned by workspace id, no key), which would stay unreadable yet
    hold those collections' fields against type changes; the run-time indexes of their own
    collections (as deleting an app drops them); this node's cached apps of theirs; and their
    files' bytes (`files_gone`, after the commit: a deletion that rolls back keeps them). Found
    before the workspaces' rows are deleted (their cascade takes the apps), deleted after: only
    reads come before the conditional DELETE of the rows, so a concurrent write still wins.

    The indexes go first (`drop_indexes`), before the workspaces' rows are held: dropping one
    holds the records table, which a record write holds before it holds its workspaces' rows
    (`datasets/holding.py`). Dropped last, the deletion held its rows, then waited for a call
    that held the table while it waited for a row: a deadlock. Their apps are held before the
    table (`leftovers_of`), as an app's own deletion holds its app."""

    workspace_ids: tuple[str, ...]
    app_ids: tuple[str, ...]
    collection_ids: tuple[str, ...]

    async def delete(
        self,
        session: AsyncSession,
        app_changed: Callable[[str], None],
        workspaces_gone: Callable[[Sequence[str]], None] | None = None,
        files_gone: Callable[[Sequence[str]], None] | None = None,
    ) -> None:
        if not self.workspace_ids:
            return
        if workspaces_gone is not None:  # their keys stop at once on this node
            after_commit(session, partial(workspaces_gone, self.workspace_ids))
        if files_gone is not None:
            after_commit(session, partial(files_gone, self.workspace_ids))
        await session.execute(
            delete(Record)
            .where(Record.partition.in_(self.workspace_ids))
            .execution_options(synchronize_session=False)
        )
        for app_id in self.app_ids:
            after_commit(session, partial(app_changed, app_id))

    async def drop_indexes(self, session: AsyncSession) -> None:
        """Drop their collections' indexes: before the workspaces' rows are held (see above);
        rolled back with the deletion (DDL is transactional on both backends)."""
        if not self.collection_ids:
            return
        connection = await session.connection()
        for collection_id in self.collection_ids:
            await drop_indexes(connection, collection_id)


async def leftovers_of(session: AsyncSession, workspace_ids: Sequence[str]) -> Leftovers:
    """What deleting the workspaces must clean, their rows locked by the caller already. Their
    apps are held `FOR NO KEY UPDATE` by id (PostgreSQL), before the records table, as an
    app's deletion or a schema change holds its app (`AppService.delete`): one in flight is
    waited for, and its app, collections and indexes are then not found here; one coming later
    waits for this deletion, then finds its app gone (404). Taking the table first, the
    deletion waited for an app whose deletion waited for the table: a deadlock; and it dropped
    an index that deletion had dropped meanwhile (a 500)."""
    if not workspace_ids:
        return Leftovers((), (), ())
    apps = await session.scalars(
        select(App.id)
        .where(App.workspace_id.in_(workspace_ids))
        .order_by(App.id)
        .with_for_update(key_share=True)
    )
    app_ids = tuple(apps.all())
    collections = (
        await session.scalars(select(Collection.id).where(Collection.app_id.in_(app_ids)))
        if app_ids
        else None
    )
    collection_ids = tuple(collections.all()) if collections is not None else ()
    return Leftovers(tuple(workspace_ids), app_ids, collection_ids)
