"""Reading and replacing an app's traffic limits (editors of the app's workspace)."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder.models import ApiDefinition, AppVersion
from apiforge.builder.service import find_app
from apiforge.core.db import after_commit
from apiforge.core.errors import ValidationError
from apiforge.idempotency.locking import NO_PRECONDITION, Precondition, advance
from apiforge.traffic.models import TrafficLimits
from apiforge.traffic.rules import LimitRules
from apiforge.traffic.schemas import LimitValuesRead, TrafficLimitsRead, TrafficLimitsUpdate
from apiforge.workspaces.models import Role
from apiforge.workspaces.service import CurrentWorkspace


def limits_read(app_id: str, row: TrafficLimits | None) -> TrafficLimitsRead:
    document: dict[str, Any] = dict(row.limits) if row is not None else {}
    apis = document.pop("apis", None) or {}
    return TrafficLimitsRead(
        app_id=app_id,
        **LimitValuesRead.model_validate(document).model_dump(),
        apis={name: LimitValuesRead.model_validate(values) for name, values in apis.items()},
        updated_time=row.updated_at if row is not None else None,
        version=row.version if row is not None else 0,
    )


def _unknown(api: str) -> dict[str, str]:
    return {"field": f"apis.{api}", "message": "no such API"}


async def _published_apis(session: AsyncSession, app_id: str) -> set[str]:
    """Names of the APIs in any published version of the app (read only when a name is not on
    `dev`: snapshots are whole documents)."""
    snapshots = await session.scalars(
        select(AppVersion.snapshot).where(AppVersion.app_id == app_id)
    )
    return {name for snapshot in snapshots for name in (snapshot.get("apis") or {})}


class TrafficLimitsService:
    def __init__(self, session: AsyncSession, rules: LimitRules) -> None:
        self.session = session
        self.rules = rules

    async def read(self, current: CurrentWorkspace, app_id: str) -> TrafficLimitsRead:
        app = await find_app(self.session, current.id, app_id)
        return limits_read(app.id, await self.session.get(TrafficLimits, app.id))

    async def replace(
        self,
        current: CurrentWorkspace,
        app_id: str,
        data: TrafficLimitsUpdate,
        precondition: Precondition = NO_PRECONDITION,
    ) -> TrafficLimitsRead:
        """Replace the whole document; every API named must exist on `dev` or in a published
        version (a typo would otherwise be a limit that silently never applies; an API deleted
        from `dev` still answers in the versions that have it, and its limits stay settable —
        the document `GET` answers can always be sent back). `If-Match` is checked (412) against
        the version read under the app's lock, and the UPDATE is conditional on it (409)."""
        app = await find_app(self.session, current.id, app_id, lock=True)
        current.require(Role.EDITOR)
        if data.apis:
            known = set(
                await self.session.scalars(
                    select(ApiDefinition.api).where(
                        ApiDefinition.app_id == app.id, ApiDefinition.api.in_(list(data.apis))
                    )
                )
            )
            unknown = sorted(set(data.apis) - known)
            if unknown:
                unknown = sorted(set(unknown) - await _published_apis(self.session, app.id))
            if unknown:
                raise ValidationError(
                    "Limits name APIs the app does not have",
                    errors=[_unknown(name) for name in unknown],
                )
        row = await self.session.get(TrafficLimits, app.id)
        if row is None:
            precondition.check(0)  # never set: version 0, the first document is version 1
            row = TrafficLimits(app_id=app.id, limits=data.document())
            self.session.add(row)
        else:
            advance(row, precondition)
            row.limits = data.document()
        await self.session.flush()
        await self.session.refresh(row)
        # Once committed: a call reading the limits before then would cache the old ones again.
        after_commit(self.session, lambda: self.rules.forget_app(app_id))
        return limits_read(app.id, row)
