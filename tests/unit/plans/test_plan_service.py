"""PlanService against a real database: the single default, usage counters, account allowances."""

from collections.abc import AsyncIterator
from datetime import datetime

import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.accounts.models import Account
from apiforge.core.errors import ConflictError
from apiforge.plans.models import Plan
from apiforge.plans.schemas import PlanCreate, PlanUpdate
from apiforge.plans.service import (
    RATE_QUOTAS,
    USAGE_COUNTERS,
    PlanService,
    account_plan,
)
from apiforge.workspaces.models import Workspace
from apiforge.workspaces.service import create_workspace


@pytest.fixture
async def session(app: FastAPI) -> AsyncIterator[AsyncSession]:
    async with app.state.sessionmaker() as db:
        yield db
        await db.rollback()


async def _defaults(session: AsyncSession) -> list[str]:
    return list(await session.scalars(select(Plan.code).where(Plan.is_default.is_(True))))


async def _owner(session: AsyncSession) -> Account:
    account = Account(email="ada@example.com", password_hash="not-a-real-hash")
    session.add(account)
    await session.flush()
    return account


async def test_default_flag_moves_and_stays_unique(session: AsyncSession) -> None:
    service = PlanService(session)
    assert await _defaults(session) == ["free"]
    pro = await service.create_plan(PlanCreate(code="pro", name="Pro", is_default=True))
    assert await _defaults(session) == ["pro"]
    team = await service.create_plan(PlanCreate(code="team", name="Team"))
    read = await service.update_plan(team.id, PlanUpdate(is_default=True))
    assert read.is_default
    assert await _defaults(session) == ["team"]
    assert not (await service.get_plan(pro.id)).is_default


async def test_the_default_cannot_be_unset_directly(session: AsyncSession) -> None:
    service = PlanService(session)
    free_id = await session.scalar(select(Plan.id).where(Plan.code == "free"))
    assert free_id is not None
    with pytest.raises(ConflictError) as caught:
        await service.update_plan(free_id, PlanUpdate(is_default=False, name="Renamed"))
    assert caught.value.reason == "default_plan_required"
    assert (await service.get_plan(free_id)).name == "Free"


async def test_usage_lists_counted_quotas_and_uses_registered_counters(
    session: AsyncSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = await _owner(session)
    workspace = await create_workspace(session, owner.id, "W", personal=True)

    async def seven_apps(_session: AsyncSession, _workspace: Workspace, _now: datetime) -> int:
        return 7

    monkeypatch.setitem(USAGE_COUNTERS, "apps", seven_apps)
    report = await PlanService(session).user_plans(workspace)
    usage = {u.quota: u for u in report.usage}
    assert not RATE_QUOTAS & set(usage)
    assert (usage["apps"].used, usage["apps"].limit) == (7, 10)
    assert (usage["members"].used, usage["workspaces"].used) == (1, 1)
    assert usage["records"].used == 0
    assert report.current_plan.code == "free"


async def test_account_allowance_plan_falls_back_to_the_default(session: AsyncSession) -> None:
    owner = await _owner(session)
    assert (await account_plan(session, owner.id)).code == "free"  # no personal workspace yet
    service = PlanService(session)
    pro = await service.create_plan(PlanCreate(code="pro", name="Pro"))
    workspace = await create_workspace(session, owner.id, "W", personal=True)
    workspace.plan_id = pro.id
    await session.flush()
    assert (await account_plan(session, owner.id)).code == "pro"
