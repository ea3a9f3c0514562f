"""The rows a subscription or key change refers to, held before its own (one lock order).

A subscription or a key refers to its workspace, to an app (its own workspace's or another's)
and to the account that wrote it. Deleting any of these takes the subscription's or key's row
along (its cascade, or `SET NULL` for the account), and holds what it deletes `FOR UPDATE`
first, in one order: a workspace's deletion (or its owner's account's) its workspace rows by
id, then its apps (`ensure_unused`, the cascade), the account last; an app's deletion its app.
A change that held its subscription or key row first and then wrote a reference (the foreign
key's `FOR KEY SHARE` of an insert, or of `revoked_by`) waited for such a deletion while the
deletion's cascade waited for that row: a deadlock, PostgreSQL failing one side (a 500). So
the change holds the rows it refers to `FOR KEY SHARE` first, in the deletions' order —
workspace, app, account — and its own rows after. A deletion in flight is waited for, and the
change then finds what it refers to gone (404); a deletion coming later waits for the change
and takes what it wrote along. `FOR KEY SHARE` is what the foreign keys take anyway: no writer
waits for another, nor for a member change or a rename of the workspace.

A workspace row the change locks itself (a `ws-` key's count, `plans.service.lock_workspace`)
is locked that way, not first `FOR KEY SHARE`: a deletion holds its row `FOR NO KEY UPDATE`
first, so taking the lighter lock and then the heavier one would wait for the deletion while
the deletion waited for the lighter one.
"""

from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.accounts.models import Account
from apiforge.builder.models import App
from apiforge.core.db import begin_as_writer
from apiforge.core.errors import NotFoundError
from apiforge.workspaces.models import Workspace
from apiforge.workspaces.service import WorkspaceNotFoundError


class AccountGoneError(NotFoundError):
    """The acting account was deleted while its request ran: nothing is written for it."""

    reason = "account_not_found"
    message = "Account not found"


async def hold_referenced(
    session: AsyncSession,
    *,
    workspace_id: str | None = None,
    app_id: str | None = None,
    account_id: str | None = None,
    app_gone: Callable[[], NotFoundError] = NotFoundError,
) -> None:
    """Hold each row given `FOR KEY SHARE` until commit (PostgreSQL), in this order: 404
    `workspace_not_found`, `app_gone()` or `account_not_found` for the first one gone. SQLite:
    the transaction becomes the writer first (`FOR KEY SHARE` locks nothing there), so no
    deletion commits between this look and the change's write."""
    await begin_as_writer(await session.connection())
    held = (
        (Workspace, workspace_id, WorkspaceNotFoundError),
        (App, app_id, app_gone),
        (Account, account_id, AccountGoneError),
    )
    for model, row_id, gone in held:
        if row_id is None:
            continue
        stmt = select(model.id).where(model.id == row_id)
        if await session.scalar(stmt.with_for_update(read=True, key_share=True)) is None:
            raise gone()
