"""Writes a workspace's deletion takes with it hold that workspace's row first.

A record write or a user-system right written by a call belongs to two workspaces: the calling
one (the partition) and the one owning the app (its collection, its rights). Deleting either
takes the write with it — the caller's partition by `Leftovers`, the app's collections and
rights by the cascade — after its cascade has detached the workspace's wallets, which the
call's charge then waits for. So each such write first holds both workspaces' rows
`FOR KEY SHARE` (the lock a foreign key takes; writers never wait for each other), in id order
(an account's deletion holds its workspaces `FOR UPDATE` by id), right after the records
table's lock (an index change holds the table first: a deletion dropping its collections'
indexes does so before it holds its row) and before any row of theirs. A deletion holds its
workspace's row `FOR UPDATE` before anything a call holds, so it waits for a write in flight,
and a write coming later waits for it and then finds the partition gone (404
`workspace_not_found`), never a deadlock or a foreign key's 500. SQLite has one writer: the
same statement only tells whether the partition is still there.
"""

from typing import Any, Final

from sqlalchemy import false, func, select, update
from sqlalchemy.sql.selectable import CTE, ScalarSelect

from apiforge.builder.models import App
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
    return select(func.count()).select_from(rows).where(rows.c.id == partition).scalar_subquery()
