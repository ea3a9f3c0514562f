"""Second review of billing: a workflow whose cost no wallet can hold is refused before it runs
(it was a 500 on both backends), and credits, calls, redemptions and withdrawals racing on fresh or
exactly funded wallets stay exact to the unit."""

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


def _nested(*iterations: int) -> list[dict[str, Any]]:
    """A count inside forEach loops (outermost first): it costs the product of their
    `maxIterations` (and the loops' own prices)."""
    steps: list[dict[str, Any]] = [COUNT]
    for level, most in enumerate(reversed(iterations)):
        loop = {"id": f"loop{level}", "type": "forEach", "items": [], "maxIterations": most}
        steps = [{**loop, "steps": steps}]
    return steps


@pytest.mark.parametrize(
    "iterations",
    [
        (10_000,) * 5,  # ~1e20 RU: more than 64 bits (the 402's JSON could not say it)
        (10_000,) * 4 + (1_000,),  # ~1e19 RU: above a signed 64-bit balance (PostgreSQL's)
        (10_000,) * 4,  # ~1e16 RU: above the largest price (MAX_RU, 2**53 - 1)
    ],
)
async def test_a_workflow_costing_more_than_any_call_may_is_refused_before_it_runs(
    app: FastAPI, client: AsyncClient, iterations: tuple[int, ...]
) -> None:
    user = await register(client)
    admin = await make_admin(app, client)
    app_id = data_of(await client.post("/api/v1/apps", json={"name": "W"}, headers=user.headers))[
        "id"
    ]
    body = {"appId": app_id, "name": "items", "fields": ITEM_FIELDS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))
    await top_up(client, admin, user.workspace_id, MAX_AMOUNT)
    before = await ledger_invariants(app)
    run = {"appId": app_id, "steps": _nested(*iterations)}
    response = await client.post("/api/v1/workflows", json=run, headers=user.headers)
    data = assert_error(response, 400, "invalid_definition")
    assert data["errors"][0]["field"] == "steps"
    assert await ledger_invariants(app) == before
    # Below the cap a workflow the wallet can't cover is a 402 naming its price; a payable
    # workflow is still charged.
    run = {"appId": app_id, "steps": _nested(10_000, 10_000, 10_000, 2)}  # 2e12 RU
    response = await client.post("/api/v1/workflows", json=run, headers=user.headers)
    price = assert_error(response, 402, "insufficient_balance")["price"]
    assert MAX_AMOUNT < price <= MAX_RU
    run = {"appId": app_id, "steps": [COUNT]}
    assert data_of(await client.post("/api/v1/workflows", json=run, headers=user.headers)) == {
        "total": 0
    }
    assert (await balances(client, user))["balance"] == MAX_AMOUNT - COST


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
