"""Seventh review of billing: a movement into or out of a workspace deleted while it ran, when
the workspace's wallets exist already (an admin's top-up, a redemption into it or out of it, a
withdrawal request) is a 404 `workspace_not_found` with nothing moved: its RU never land in (or
leave) a wallet the deletion detached from every workspace, nor does a withdrawal request hit the
foreign key (a 500)."""

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from apiforge.billing.models import Withdrawal
from apiforge.core.settings import Settings
from apiforge.workspaces.models import Workspace
from tests.e2e._billing import Market, balances, invoke, ledger_invariants, market, top_up
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, new_workspace, while_deleting
from tests.factories import make_admin, register

UNLIMITED = {"requestsPerMinute": -1, "concurrentRequests": -1, "callsPerMonth": -1}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def _earning(app: FastAPI, client: AsyncClient) -> tuple[Market, int]:
    """A builder whose workspace earned something from one call."""
    m = await market(app, client)
    await on_plan(client, m.admin, m.consumer.workspace_id, "unlimited", **UNLIMITED)
    await top_up(client, m.admin, m.consumer.workspace_id, 10)
    assert await invoke(client, m) == 200
    earned = (await balances(client, m.builder))["earnings"]
    assert earned > 0
    return m, earned


async def test_a_top_up_of_existing_wallets_of_a_workspace_deleted_meanwhile_is_a_404(
    app: FastAPI, client: AsyncClient
) -> None:
    admin, owner = await make_admin(app, client), await register(client)
    workspace_id = await new_workspace(client, owner)
    await top_up(client, admin, workspace_id, 5)  # its wallets exist
    before = await ledger_invariants(app)
    response = await while_deleting(
        app,
        Workspace,
        workspace_id,
        lambda: client.post(
            f"/api/v1/admin/wallets/{workspace_id}/credits",
            json={"amount": 5},
            headers=admin.headers,
        ),
    )
    assert_error(response, 404, "workspace_not_found")
    assert await ledger_invariants(app) == before


async def test_a_redemption_into_existing_wallets_of_a_workspace_deleted_meanwhile_is_a_404(
    app: FastAPI, client: AsyncClient
) -> None:
    m, earned = await _earning(app, client)
    target = await new_workspace(client, m.builder)
    await balances(client, m.builder, target)  # its wallets exist
    before = await ledger_invariants(app)
    response = await while_deleting(
        app,
        Workspace,
        target,
        lambda: client.post(
            "/api/v1/redemptions",
            json={"amount": earned, "targetWorkspaceId": target},
            headers=m.builder.headers,
        ),
    )
    assert_error(response, 404, "workspace_not_found")
    assert (await balances(client, m.builder))["earnings"] == earned
    assert await ledger_invariants(app) == before


@pytest.mark.parametrize("path", ["/api/v1/redemptions", "/api/v1/withdrawals"])
async def test_moving_earnings_out_of_a_workspace_deleted_meanwhile_is_a_404(
    app: FastAPI, client: AsyncClient, path: str
) -> None:
    m, earned = await _earning(app, client)
    before = await ledger_invariants(app)
    response = await while_deleting(
        app,
        Workspace,
        m.builder.workspace_id,
        lambda: client.post(path, json={"amount": earned}, headers=m.builder.headers),
    )
    assert_error(response, 404, "workspace_not_found")
    assert await ledger_invariants(app) == before
    async with app.state.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Withdrawal)) == 0
