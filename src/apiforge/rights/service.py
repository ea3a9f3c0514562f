"""`UserRightService`: the calling workspace's grants of one app's user system.

A workspace manages the rows of its own partition only: the app's builder for its `dev` calls and
its own users, and every consumer that has the app enabled for theirs. Any other app id is the
same 404 as an unknown one. Viewers list; editors and above grant and revoke.
"""

from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from apiforge.builder.models import App
from apiforge.core.errors import NotFoundError
from apiforge.datasets.models import UserRight
from apiforge.http.pagination import Page, PageParams, fetch_page, order_by
from apiforge.keys.models import Subscription
from apiforge.rights.schemas import UserRightGrant, UserRightHeld, UserRightRead
from apiforge.rights.store import RightsKey, grant_rights, revoke_rights
from apiforge.tools.ids import is_id
from apiforge.workspaces.models import Role
from apiforge.workspaces.service import CurrentWorkspace

SORTS: dict[str, ColumnElement[Any]] = {
    "userId": UserRight.user_id.expression,
    "target": UserRight.target.expression,
    "updatedTime": UserRight.updated_at.expression,
}


class AppNotFoundError(NotFoundError):
    reason = "app_not_found"
    message = "App not found"


class UserRightNotFoundError(NotFoundError):
    reason = "user_right_not_found"
    message = "The user holds no rights on this target"


class UserRightService:
    """Never commits: one commit per request, in the session dependency."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_rights(
        self,
        current: CurrentWorkspace,
        app_id: str,
        params: PageParams,
        user_id: str | None = None,
        target: str | None = None,
    ) -> Page[UserRightRead]:
        await self._ensure_app(current, app_id)
        stmt = select(UserRight).where(
            UserRight.workspace_id == current.id, UserRight.app_id == app_id
        )
        if user_id is not None:
            stmt = stmt.where(UserRight.user_id == user_id)
        if target is not None:
            stmt = stmt.where(UserRight.target == target)
        stmt = order_by(stmt, params, SORTS, default="userId", default_order="asc")
        stmt = stmt.order_by(UserRight.user_id, UserRight.target)  # a stable order within ties
        rows, total = await fetch_page(self.session, stmt, params)
        items = [
            UserRightRead(
                user_id=row.user_id,
                target=row.target,
                rights=[str(r) for r in row.rights or []],
                updated_time=row.updated_at,
            )
            for row in rows
        ]
        return params.page(items, total)

    async def grant(
        self, current: CurrentWorkspace, app_id: str, data: UserRightGrant
    ) -> UserRightHeld:
        current.require(Role.EDITOR)
        await self._ensure_app(current, app_id)
        key = RightsKey(current.id, app_id, data.user_id, data.target)
        held = await grant_rights(await self.session.connection(), key, data.rights)
        return UserRightHeld(user_id=data.user_id, target=data.target, rights=held)

    async def revoke(
        self,
        current: CurrentWorkspace,
        app_id: str,
        user_id: str,
        target: str,
        rights: list[str] | None,
    ) -> UserRightHeld:
        current.require(Role.EDITOR)
        await self._ensure_app(current, app_id)
        key = RightsKey(current.id, app_id, user_id, target)
        held = await revoke_rights(await self.session.connection(), key, rights)
        if held is None:
            raise UserRightNotFoundError()
        return UserRightHeld(user_id=user_id, target=target, rights=held)

    async def _ensure_app(self, current: CurrentWorkspace, app_id: str) -> None:
        """The app must be the workspace's own, or enabled by it while public (the rule calls
        follow); else the one 404, so other workspaces' private apps never show."""
        if not is_id(app_id):
            raise AppNotFoundError()
        enabled = (
            select(Subscription.id)
            .where(
                Subscription.workspace_id == current.id,
                Subscription.app_id == App.id,
                Subscription.enabled.is_(True),
            )
            .exists()
        )
        found = await self.session.scalar(
            select(App.id).where(
                App.id == app_id,
                or_(App.workspace_id == current.id, and_(App.visibility == "public", enabled)),
            )
        )
        if found is None:
            raise AppNotFoundError()
