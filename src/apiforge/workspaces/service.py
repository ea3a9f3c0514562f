"""Workspaces and memberships: creation, listing, role checks."""

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.core.errors import UnavailableError
from apiforge.plans.models import Plan
from apiforge.workspaces.models import Membership, Role, Workspace


async def default_plan_id(session: AsyncSession) -> str:
    plan_id = await session.scalar(select(Plan.id).where(Plan.is_default.is_(True)).limit(1))
    if plan_id is None:
        raise UnavailableError("No default plan is configured", reason="no_default_plan")
    return plan_id


async def create_workspace(
    session: AsyncSession, owner_id: str, name: str, *, personal: bool = False
) -> Workspace:
    workspace = Workspace(
        name=name, personal=personal, owner_id=owner_id, plan_id=await default_plan_id(session)
    )
    session.add(workspace)
    await session.flush()
    session.add(Membership(workspace_id=workspace.id, account_id=owner_id, role=Role.OWNER))
    await session.flush()
    return workspace


async def personal_workspace_id(session: AsyncSession, account_id: str) -> str | None:
    return await session.scalar(
        select(Workspace.id).where(Workspace.owner_id == account_id, Workspace.personal.is_(True))
    )
