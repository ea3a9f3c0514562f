"""Charging gateway calls: 402 before any step, exact split on success, nothing on failure."""

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.billing.models import PLATFORM_WALLETS
from apiforge.core.settings import Settings
from tests.e2e._billing import (
    COST,
    PRICE,
    balances,
    invoke,
    ledger_invariants,
    market,
    top_up,
)
from tests.e2e._workspaces import data_of


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def test_calls_are_charged_split_and_refused_without_funds(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    assert await invoke(client, m) == 402  # an empty wallet pays for nothing
    await top_up(client, m.admin, m.consumer.workspace_id, 2 * PRICE + PRICE // 2)
    assert [await invoke(client, m) for _ in range(3)] == [200, 200, 402]
    assert await balances(client, m.consumer) == {"balance": PRICE // 2, "earnings": 0}
    assert await balances(client, m.builder) == {"balance": 0, "earnings": 2 * (PRICE - COST)}
    wallets = await ledger_invariants(app)
    assert wallets[PLATFORM_WALLETS["revenue"]] == 2 * COST

    page = data_of(await client.get("/api/v1/ledger-entries?kind=call", headers=m.consumer.headers))
    assert page["totalCount"] == 2
    entry = page["list"][0]
    assert entry["amount"] == -PRICE
    assert entry["appId"] == m.app_id
    assert entry["api"] == "priced"
    assert entry["walletKind"] == "balance"
    assert entry["counterpartyWorkspaceId"] == m.builder.workspace_id


async def test_failed_calls_and_free_apis_cost_nothing(app: FastAPI, client: AsyncClient) -> None:
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, PRICE)
    assert await invoke(client, m, fail=True) == 400
    assert await invoke(client, m, "free") == 200
    assert await balances(client, m.consumer) == {"balance": PRICE, "earnings": 0}
    # the reservation of the failed call was released: the whole balance is spendable again
    assert await invoke(client, m) == 200
    assert await invoke(client, m, "free") == 200  # price 0 needs no balance at all
    assert await balances(client, m.consumer) == {"balance": 0, "earnings": 0}
    await ledger_invariants(app)


async def test_charged_call_logs_once_with_its_charge(app: FastAPI, client: AsyncClient) -> None:
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, PRICE)
    assert await invoke(client, m) == 200
    assert await invoke(client, m) == 402
    await app.state.gateway_state.extra["request_logs"].flush()
    logs = data_of(await client.get("/api/v1/request-logs", headers=m.consumer.headers))
    assert sorted(row["status"] for row in logs["list"]) == [200, 402]
    entries = data_of(await client.get("/api/v1/ledger-entries", headers=m.consumer.headers))
    call = next(e for e in entries["list"] if e["kind"] == "call")
    ok_row = next(row for row in logs["list"] if row["status"] == 200)
    assert call["requestId"] == ok_row["requestId"]
