"""Writes a workspace's deletion takes with it hold that workspace's row first.

A record write or a user-system right written by a call belongs to two workspaces: the calling
one (the partition) and the one owning the app (its collection, its rights). Deleting either
takes the write with it — the caller's partition by `Leftovers`, the app's collections and
rights by the cascade — after its cascade has detached the workspace's wallets, which the
call's charge then waits for. So each such write first holds both workspaces' rows
`FOR KEY SHARE` (the lock a foreign key takes; writers never wait for each other), in id order
(an account's deletion holds its workspaces `FOR UPDATE` by id), right after the records
table's lock (an index change holds the table first: a deletion dropping its collections'
indexes does so before it holds its row, and after it holds its apps `FOR NO KEY UPDATE`,
as an app's deletion does) and before any row of theirs. A deletion holds its
workspace's row `FOR UPDATE` before anything a call holds, so it waits for a write in flight,
and a write coming later waits for it and then finds the partition gone (404
`workspace_not_found`), never a deadlock or a foreign key's 500. SQLite has one writer: the
same statement only tells whether the partition is still there.
"""

from typing import Any, Final

from sqlalchemy import exists, false, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE, ScalarSelect

from apiforge.builder.models import App
from apiforge.core.db import begin_as_writer
from apiforge.core.errors import NotFoundError
from apiforge.datasets.models import Record
from apiforge.workspaces.models import Workspace

# PostgreSQL: the lock a record write takes on the table anyway (`ROW EXCLUSIVE`), taken as the
# statement starts (a no-op UPDATE in its WITH), its rows only as it runs. One statement, not a
# `LOCK TABLE` more.
TABLE_FIRST: Final[CTE] = (
    update(Record).where(false()).values(updated_at=Record.updated_at).cte("table_first")
)


class PartitionGoneError(NotFoundError):
    """The calling workspace was deleted before the write: nothing of it is written."""

    reason = "workspace_not_found"
    message = "Workspace not found"


class AppGoneError(NotFoundError):
    """The app was deleted before the write (a right of its user system): nothing is written."""

    reason = "app_not_found"
    message = "App not found"


def app_there(app_id: str) -> ColumnElement[bool]:
    """Whether the app still exists, as the statement holding the workspaces sees it: after an
    app's deletion, which holds the records table first (`hold_records_table`), a write waits for
    the table and then sees the app gone (404), not its foreign key's 500."""
    return exists(select(App.id).where(App.id == app_id))


async def hold_records_table(connection: AsyncConnection) -> None:
    """PostgreSQL: the records table, before an app's deletion holds any row, when dropping
    its collections' indexes did not (`ACCESS EXCLUSIVE`: taken first, never upgraded to, or a
    call that read, then writes, would wait for it while it waited for the read). Every record
    or right writer takes the table first (`TABLE_FIRST`, until commit), so the deletion waits
    for those in flight, and those coming later wait for it, then find the app gone. `SHARE ROW
    EXCLUSIVE`: readers go on; two deletions take it one after the other (each then deletes
    records). SQLite: the deletion is the one writer already."""
    if connection.dialect.name == "postgresql":
        await connection.execute(
            text(f"LOCK TABLE {Record.__tablename__} IN SHARE ROW EXCLUSIVE MODE")
        )


def workspaces_held(partition: str, app_id: str) -> ScalarSelect[Any]:
    """1 while the partition's workspace exists (else 0), its row and the app's workspace's
    held `FOR KEY SHARE` by id until commit (PostgreSQL; SQLite ignores the lock). A scalar
    subquery, evaluated as the outer statement computes its row: before that statement's own
    row lock (`RecordStore._hold_fields`: the collection's)."""
    owner = select(App.workspace_id).where(App.id == app_id).scalar_subquery()
    rows = (
        select(Workspace.id)
        .where(Workspace.id.in_([partition, owner]))
        .order_by(Workspace.id)
        .with_for_update(read=True, key_share=True)
        .subquery("held")
    )
    # Counted with a FILTER, not a WHERE: PostgreSQL pushes a WHERE on `held` down into it, and
    # then locks the partition's row only, not the app's workspace's.
    return select(func.count().filter(rows.c.id == partition)).select_from(rows).scalar_subquery()


async def hold_partition_and_app(connection: AsyncConnection, partition: str, app_id: str) -> None:
    """Before a row of an app's user system (a right, a token revocation): the records table's
    lock (PostgreSQL), then the calling and the app's workspace rows, as a record write takes
    them; 404 `app_not_found` when the app is gone, `workspace_not_found` when the calling
    workspace is (their foreign keys' 500 otherwise). SQLite: the transaction becomes the writer
    first (`FOR UPDATE` locks nothing there)."""
    await begin_as_writer(connection)
    stmt = select(workspaces_held(partition, app_id), app_there(app_id))
    if connection.dialect.name == "postgresql":
        stmt = stmt.add_cte(TABLE_FIRST)
    held, app = (await connection.execute(stmt)).one()
    if not app:
        raise AppGoneError()
    if not held:
        raise PartitionGoneError()
