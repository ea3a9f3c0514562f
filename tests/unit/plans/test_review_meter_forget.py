"""A plan change reaches this node's quota meter at once: the meter forgets the plan when the
change commits (not before, when a concurrent check would read and keep the old limits), and a
plan read still in flight when it forgets is not kept."""

import asyncio
import time

import pytest
from fastapi import FastAPI
from sqlalchemy import select

from apiforge.accounts.models import Account
from apiforge.core.db import unit_of_work
from apiforge.plans.meter import quota_meter
from apiforge.plans.models import Plan
from apiforge.plans.quotas import QuotaExceededError
from apiforge.plans.schemas import PlanUpdate, QuotasInput, WorkspacePlanUpdate
from apiforge.plans.service import PlanService
from apiforge.tools.ids import new_id
from apiforge.workspaces.models import Workspace


async def _team_on_plan(app: FastAPI, **quotas: int) -> tuple[str, str]:
    """A workspace on a plan of its own: (workspace id, plan id)."""
    async with unit_of_work(app.state.sessionmaker) as session:
        account = Account(email=f"{new_id()}@example.com", password_hash="x", name="")
        plan = Plan(code=f"p{new_id()[:20]}", name="P", quotas=quotas)
        session.add_all([account, plan])
        await session.flush()
        workspace = Workspace(name="W", owner_id=account.id, plan_id=plan.id, personal=False)
        session.add(workspace)
        await session.flush()
        return workspace.id, plan.id


async def _insert(app: FastAPI, workspace_id: str) -> None:
    async with app.state.engine.connect() as connection:
        await quota_meter(connection).reserve_stock(
            connection, workspace_id, records=1, size=1, operation="records.insert"
        )


async def test_a_plan_raised_while_checks_run_applies_once_committed(app: FastAPI) -> None:
    workspace_id, plan_id = await _team_on_plan(app, records=1)
    await _insert(app, workspace_id)
    with pytest.raises(QuotaExceededError):
        await _insert(app, workspace_id)

    async with unit_of_work(app.state.sessionmaker) as session:
        update = PlanUpdate(quotas=QuotasInput(records=10))
        await PlanService(session).update_plan(plan_id, update)
        # A check on this node before the commit still sees the committed (old) limits...
        with pytest.raises(QuotaExceededError):
            await _insert(app, workspace_id)
    # ...and the first check after the commit sees the new ones.
    await _insert(app, workspace_id)


async def test_a_workspace_moved_while_checks_run_applies_once_committed(app: FastAPI) -> None:
    workspace_id, _ = await _team_on_plan(app, records=1)
    _, bigger = await _team_on_plan(app, records=10)
    await _insert(app, workspace_id)
    with pytest.raises(QuotaExceededError):
        await _insert(app, workspace_id)

    async with unit_of_work(app.state.sessionmaker) as session:
        await PlanService(session).move_workspace(workspace_id, WorkspacePlanUpdate(plan_id=bigger))
        with pytest.raises(QuotaExceededError):
            await _insert(app, workspace_id)
    await _insert(app, workspace_id)
    async with unit_of_work(app.state.sessionmaker) as session:
        assert (
            await session.scalar(select(Workspace.plan_id).where(Workspace.id == workspace_id))
            == bigger
        )


async def test_a_plan_read_in_flight_when_forgotten_is_not_kept(app: FastAPI) -> None:
    engine = app.state.engine
    workspace_id, _ = await _team_on_plan(app, records=1)
    meter = quota_meter(engine)
    async with engine.connect() as connection:
        await meter.limits(connection, workspace_id)
        meter._plans[workspace_id].loaded = time.monotonic() - meter.plan_ttl * 1.5
        await meter.limits(connection, workspace_id)  # starts a background re-read
    assert meter._tasks
    meter.forget()  # a plan change committed while that read was under way
    await asyncio.gather(*meter._tasks)
    assert workspace_id not in meter._plans
