"""Sixth review of billing: a workspace deleted while a request creates its first wallets (its
wallet list, an admin's top-up, a redemption into it) is a 404 `workspace_not_found` with
nothing written, never a 500 from the wallets' foreign key."""

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from apiforge.billing.models import LedgerEntry, Wallet
from apiforge.core.settings import Settings
from apiforge.workspaces.models import Workspace
from tests.e2e._billing import PRICE, balances, invoke, ledger_invariants, market, top_up
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, new_workspace, while_deleting
from tests.factories import make_admin, register

UNLIMITED = {"requestsPerMinute": -1, "concurrentRequests": -1, "callsPerMonth": -1}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Welcome credits on: the first wallets of a workspace would also grant them."""
    return settings.model_copy(update={"welcome_credits": 7})


async def _money_of(app: FastAPI, workspace_id: str) -> tuple[int, int]:
    """Wallets and ledger entries ever written for the workspace."""
    async with app.state.engine.connect() as conn:
        wallets = await conn.scalar(
            select(func.count()).select_from(Wallet).where(Wallet.workspace_id == workspace_id)
        )
        entries = await conn.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.workspace_id == workspace_id)
        )
    return int(wallets or 0), int(entries or 0)


async def test_a_top_up_of_a_workspace_deleted_meanwhile_is_a_404(
    app: FastAPI, client: AsyncClient
) -> None:
    admin, owner = await make_admin(app, client), await register(client)
    workspace_id = await new_workspace(client, owner)
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
    assert await _money_of(app, workspace_id) == (0, 0)
    assert await ledger_invariants(app) == before


async def test_the_wallet_list_of_a_workspace_deleted_meanwhile_is_a_404(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    workspace_id = await new_workspace(client, owner)
    headers = {**owner.headers, "X-Workspace-Id": workspace_id}
    response = await while_deleting(
        app, Workspace, workspace_id, lambda: client.get("/api/v1/wallets", headers=headers)
    )
    assert_error(response, 404, "workspace_not_found")
    assert await _money_of(app, workspace_id) == (0, 0)


async def test_a_redemption_into_a_workspace_deleted_meanwhile_is_a_404(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    await on_plan(client, m.admin, m.consumer.workspace_id, "unlimited", **UNLIMITED)
    await top_up(client, m.admin, m.consumer.workspace_id, PRICE)
    assert await invoke(client, m) == 200
    earned = await balances(client, m.builder)
    assert earned["earnings"] > 0
    target = await new_workspace(client, m.builder)
    before = await ledger_invariants(app)
    response = await while_deleting(
        app,
        Workspace,
        target,
        lambda: client.post(
            "/api/v1/redemptions",
            json={"amount": earned["earnings"], "targetWorkspaceId": target},
            headers=m.builder.headers,
        ),
    )
    assert_error(response, 404, "workspace_not_found")
    assert await _money_of(app, target) == (0, 0)
    assert await balances(client, m.builder) == earned
    assert await ledger_invariants(app) == before
