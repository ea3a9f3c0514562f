"""`POST /api/v1/workflows` is charged like a workspace's call of its own app: the steps' cost,
to the platform, reserved before they run (402), committed with their writes, nothing when the
run fails — exact under concurrent runs."""

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from apiforge.billing.models import PLATFORM_WALLETS, LedgerEntry
from apiforge.core.settings import Settings
from apiforge.usage.models import RequestLog
from tests.e2e._billing import ITEM_FIELDS, balances, ledger_invariants, top_up
from tests.e2e._workspaces import data_of
from tests.factories import User, make_admin, register

INSERT = {"id": "item", "type": "insert", "collection": "items", "data": {"n": 1}}  # 2 RU
COUNT = {"id": "total", "type": "count", "collection": "items"}  # 1 RU
FAIL = {"id": "stop", "type": "throw", "status": 409, "error": "boom", "message": "stop"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def _builder(client: AsyncClient) -> tuple[User, str]:
    user = await register(client)
    app_id = data_of(
        await client.post("/api/v1/apps", json={"name": "Ad hoc"}, headers=user.headers)
    )["id"]
    body = {"appId": app_id, "name": "items", "fields": ITEM_FIELDS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))
    return user, app_id


async def _run(client: AsyncClient, user: User, app_id: str, *steps: dict[str, Any]) -> Any:
    body = {"appId": app_id, "steps": list(steps)}
    return await client.post("/api/v1/workflows", json=body, headers=user.headers)


async def _count(client: AsyncClient, user: User, app_id: str) -> int:
    total: int = data_of(await _run(client, user, app_id, COUNT))["total"]
    return total


async def test_a_workflow_pays_its_steps_cost_to_the_platform(
    app: FastAPI, client: AsyncClient
) -> None:
    user, app_id = await _builder(client)
    admin = await make_admin(app, client)
    refused = await _run(client, user, app_id, INSERT, COUNT)
    assert refused.status_code == 402, refused.text
    wallets = data_of(await client.get("/api/v1/wallets", headers=user.headers))["list"]
    balance = next(w["id"] for w in wallets if w["kind"] == "balance")
    assert refused.json()["data"] == {
        "error": "insufficient_balance",
        "price": 3,
        "required": 3,
        "walletId": balance,
    }
    # Free steps still run on an empty wallet.
    free = await _run(client, user, app_id, {"id": "a", "type": "set", "value": 1})
    assert data_of(free) == {"a": 1}

    workspace = user.workspace_id
    await top_up(client, admin, workspace, 10)
    assert data_of(await _run(client, user, app_id, INSERT, COUNT))["total"] == 1  # refused: none
    assert (await balances(client, user))["balance"] == 7

    async with app.state.engine.connect() as conn:
        entries = (
            await conn.execute(
                select(LedgerEntry.wallet_id, LedgerEntry.amount, LedgerEntry.api).where(
                    LedgerEntry.kind == "call"
                )
            )
        ).all()
        logged = (
            await conn.execute(
                select(RequestLog.api, RequestLog.status, RequestLog.workspace_id).where(
                    RequestLog.app_id == app_id
                )
            )
        ).all()
    wallets = await ledger_invariants(app)
    assert wallets[PLATFORM_WALLETS["revenue"]] == 3
    assert sorted((amount, api) for _, amount, api in entries) == [
        (-3, "(workflow)"),
        (3, "(workflow)"),
    ]
    assert logged == [("(workflow)", 200, workspace)]


async def test_a_failed_workflow_costs_nothing_and_writes_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    user, app_id = await _builder(client)
    await top_up(client, await make_admin(app, client), user.workspace_id, 10)
    failed = await _run(client, user, app_id, INSERT, FAIL)
    assert failed.status_code == 409, failed.text
    assert (await balances(client, user))["balance"] == 10
    assert await _count(client, user, app_id) == 0  # costs 1
    assert (await balances(client, user))["balance"] == 9
    await ledger_invariants(app)


async def test_concurrent_workflows_never_overdraw_nor_lose_a_charge(
    app: FastAPI, client: AsyncClient
) -> None:
    user, app_id = await _builder(client)
    await top_up(client, await make_admin(app, client), user.workspace_id, 5 * 3)
    runs = await asyncio.gather(*(_run(client, user, app_id, INSERT, COUNT) for _ in range(12)))
    statuses = sorted(response.status_code for response in runs)
    assert statuses == [200] * 5 + [402] * 7, [r.text for r in runs if r.status_code != 200]
    assert (await balances(client, user))["balance"] == 0
    wallets = await ledger_invariants(app)
    assert wallets[PLATFORM_WALLETS["revenue"]] == 15
    await top_up(client, await make_admin(app, client), user.workspace_id, 1)
    assert await _count(client, user, app_id) == 5  # exactly the paid runs inserted
