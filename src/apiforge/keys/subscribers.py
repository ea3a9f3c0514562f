"""Other workspaces' use of a workspace's apps: what deleting an app (or the workspace that owns
it) would take from them — their keys and the records they keep in its collections, by cascade.
"""

from collections.abc import Sequence
from typing import Annotated

from fastapi import Query
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder.models import App
from apiforge.core.errors import ConflictError
from apiforge.http.schemas import Flag
from apiforge.keys.models import Subscription

ForceDelete = Annotated[
    Flag,
    Query(
        alias="force",
        description="Also when other workspaces have the app enabled (409 `app_in_use` "
        "otherwise): their keys and their records in its collections are deleted too",
    ),
]


class AppInUseError(ConflictError):
    reason = "app_in_use"

    def __init__(self, subscribers: int) -> None:
        super().__init__(
            f"{subscribers} other workspace(s) have enabled the app(s) it would delete; their "
            "keys and the records they keep in its collections would be deleted too: make the "
            "app private and let them go (or transfer the workspace), or delete with force=true",
            details={"subscribers": subscribers},
        )


async def ensure_unused(
    session: AsyncSession, workspace_ids: Sequence[str], app_id: str | None = None
) -> None:
    """409 `app_in_use` while workspaces other than `workspace_ids` have enabled their app
    `app_id` (any of their apps when None). The apps are locked `FOR UPDATE` first, until
    commit, so no subscription lands between this count and the caller's DELETE: one being
    written holds its app `FOR KEY SHARE` (`SubscriptionService.enable`), so the lock waits for
    it and the count sees it; one coming later waits and finds no app. SQLite ignores
    `FOR UPDATE`: there the caller holds the write lock already (its first write came before)."""
    if not workspace_ids:
        return
    apps = select(App.id).where(App.workspace_id.in_(workspace_ids))
    if app_id is not None:
        apps = apps.where(App.id == app_id)
    await session.execute(apps.order_by(App.id).with_for_update())
    stmt = (
        select(func.count())
        .select_from(Subscription)
        .join(App, App.id == Subscription.app_id)
        .where(App.workspace_id.in_(workspace_ids), Subscription.workspace_id.not_in(workspace_ids))
    )
    if app_id is not None:
        stmt = stmt.where(App.id == app_id)
    others = int(await session.scalar(stmt) or 0)
    if others:
        raise AppInUseError(others)
