"""Second review of billing: a workflow whose cost no call may be charged is refused before it
runs (it was a 500 on both backends), and credits, calls, redemptions and withdrawals racing on
fresh or exactly funded wallets stay exact to the unit."""

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.billing.models import MAX_AMOUNT
from apiforge.core.settings import Settings
from apiforge.engine.base import MAX_RU
from tests.e2e._billing import (
    COST,
    ITEM_FIELDS,
    PRICE,
    balances,
    invoke,
    ledger_invariants,
    market,
    top_up,
)
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import make_admin, register

COUNT = {"id": "total", "type": "count", "collection": "items"}  # 1 RU


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


def _nested(*iterations: int, body: dict[str, Any] = COUNT) -> list[dict[str, Any]]:
    """`body` inside forEach loops (outermost first): it costs what a call can run of it (500
    steps, 1,000 iterations, all loops together)."""
    steps: list[dict[str, Any]] = [body]
    for level, most in enumerate(reversed(iterations)):
        loop = {"id": f"loop{level}", "type": "forEach", "items": [], "maxIterations": most}
        steps = [{**loop, "steps": steps}]
    return steps


MAX_STEP_PRICE = 10**9  # the most an administrator may price a step type
PAGE = {"id": "page", "type": "getMany", "collection": "items", "pageSize": 1000}  # 50 x price


@pytest.mark.parametrize("levels", [1, 5])
async def test_a_workflow_costing_more_than_any_call_may_is_refused_before_it_runs(
    app: FastAPI, client: AsyncClient, levels: int
) -> None:
    """Pages of 1,000 records at the most a step may cost, 500 of them in loops: 2.5e13 RU,
    above the most one call may be charged (10**12, one ledger movement) however deep the
    loops nest (before loops counted for the call's budgets, they reached past 64 bits)."""
    user = await register(client)
    admin = await make_admin(app, client)
    app_id = data_of(await client.post("/api/v1/apps", json={"name": "W"}, headers=user.headers))[
        "id"
    ]
    body = {"appId": app_id, "name": "items", "fields": ITEM_FIELDS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))
    for step_type in ("count", "getMany"):
        url = f"/api/v1/admin/pricing/{step_type}"
        data_of(await client.put(url, json={"cost": MAX_STEP_PRICE}, headers=admin.headers))
    funds = 10**11
    await top_up(client, admin, user.workspace_id, funds)
    before = await ledger_invariants(app)
    run = {"appId": app_id, "steps": _nested(*(10_000,) * levels, body=PAGE)}
    response = await client.post("/api/v1/workflows", json=run, headers=user.headers)
    data = assert_error(response, 400, "invalid_definition")
    assert data["errors"][0]["field"] == "steps"
    assert str(500 * 50 * MAX_STEP_PRICE) in data["errors"][0]["message"]
    assert await ledger_invariants(app) == before
    # Below the cap a workflow the wallet can't cover is a 402 naming its price; a payable
    # workflow is still charged.
    run = {"appId": app_id, "steps": _nested(*(10_000,) * levels)}  # 500 counts: 5e11 RU
    response = await client.post("/api/v1/workflows", json=run, headers=user.headers)
    price = assert_error(response, 402, "insufficient_balance")["price"]
    assert funds < price == 500 * MAX_STEP_PRICE <= MAX_RU == MAX_AMOUNT
    run = {"appId": app_id, "steps": [COUNT]}
    assert data_of(await client.post("/api/v1/workflows", json=run, headers=user.headers)) == {
        "total": 0
    }
    assert (await balances(client, user))["balance"] == funds - MAX_STEP_PRICE


async def test_credits_racing_calls_on_a_fresh_wallet_stay_exact(
    app: FastAPI, client: AsyncClient
) -> None:
    """The consumer's wallets don't exist yet: top-ups and calls (both charge paths) create
    and move them at once; whatever interleaving, each call is paid or refused, never both."""
    m = await market(app, client)
    quotas = {"requestsPerMinute": -1, "concurrentRequests": -1, "callsPerMonth": -1}
    await on_plan(client, m.admin, m.consumer.workspace_id, "unlimited", **quotas)
    url = f"/api/v1/admin/wallets/{m.consumer.workspace_id}/credits"

    async def credit() -> int:
        response = await client.post(url, json={"amount": PRICE}, headers=m.admin.headers)
        return response.status_code

    credits = [credit() for _ in range(10)]
    calls = [invoke(client, m, api) for api in ("listed", "priced") for _ in range(15)]
    statuses = await asyncio.gather(*credits, *calls)
    assert statuses[:10] == [200] * 10
    paid = statuses[10:].count(200)
    assert paid + statuses[10:].count(402) == 30
    assert await balances(client, m.consumer) == {"balance": (10 - paid) * PRICE, "earnings": 0}
    assert (await balances(client, m.builder))["earnings"] == paid * (PRICE - COST)
    await ledger_invariants(app)
    # What is left is spendable to the unit.
    assert [await invoke(client, m) for _ in range(11 - paid)] == [200] * (10 - paid) + [402]


async def test_redemptions_and_withdrawals_racing_on_earnings_stay_exact(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, 10 * PRICE)
    assert [await invoke(client, m) for _ in range(10)] == [200] * 10
    earned = 10 * (PRICE - COST)
    assert (await balances(client, m.builder))["earnings"] == earned

    async def take(path: str) -> int:
        response = await client.post(path, json={"amount": 7}, headers=m.builder.headers)
        return response.status_code

    paths = ["/api/v1/redemptions", "/api/v1/withdrawals"] * 15
    statuses = await asyncio.gather(*(take(path) for path in paths))
    assert sorted(statuses) == [200] * (earned // 7) + [402] * (30 - earned // 7)
    left = earned - 7 * (earned // 7)
    assert (await balances(client, m.builder))["earnings"] == left
    await ledger_invariants(app)
