"""Other workspaces' use of a workspace's apps: what deleting an app (or the workspace that owns
it) would take from them — their keys and the records they keep in its collections, by cascade.
"""

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
            f"{subscribers} other workspace(s) have enabled this workspace's app(s); their keys "
            "and the records they keep in its collections would be deleted too: make the app "
            "private and let them go, or delete with force=true",
            details={"subscribers": subscribers},
        )


async def ensure_unused(
    session: AsyncSession, workspace_id: str, app_id: str | None = None
) -> None:
    """409 `app_in_use` while workspaces other than `workspace_id` have enabled its app `app_id`
    (any of its apps when None)."""
    stmt = (
        select(func.count())
        .select_from(Subscription)
        .join(App, App.id == Subscription.app_id)
        .where(App.workspace_id == workspace_id, Subscription.workspace_id != workspace_id)
    )
    if app_id is not None:
        stmt = stmt.where(App.id == app_id)
    others = int(await session.scalar(stmt) or 0)
    if others:
        raise AppInUseError(others)
