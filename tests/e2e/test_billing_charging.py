"""Charging gateway calls: 402 before any step, exact split on success, nothing on failure."""

from datetime import timedelta

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, insert, select, update

from apiforge.billing.ledger import Leg, post
from apiforge.billing.models import PLATFORM_WALLETS, Wallet, WalletHold
from apiforge.core.settings import Settings
from apiforge.datasets.models import Record
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id
from tests.conftest import DATABASE_URL
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

ISSUANCE = PLATFORM_WALLETS["issuance"]


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


async def _wallet_of(app: FastAPI, workspace_id: str) -> str:
    async with app.state.engine.connect() as conn:
        wallet_id = await conn.scalar(
            select(Wallet.id).where(Wallet.workspace_id == workspace_id, Wallet.kind == "balance")
        )
    assert wallet_id is not None
    return str(wallet_id)


@pytest.mark.skipif(DATABASE_URL.startswith("postgresql"), reason="the SQLite wallet cache")
async def test_a_stale_cache_refuses_instead_of_overdrawing(
    app: FastAPI, client: AsyncClient
) -> None:
    """Someone broke the one-writer assumption (a second process wrote the wallet): the cache
    believes in RU the database no longer has. The call is refused and fully rolled back (its
    insert step too), and the next calls use the database's balance."""
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, 3 * PRICE)
    assert await invoke(client, m) == 200  # the balance is cached now: 2 * PRICE
    wallet = await _wallet_of(app, m.consumer.workspace_id)
    async with app.state.engine.begin() as conn:  # behind the cache's back, ledger kept whole
        await post(
            conn,
            [
                Leg(wallet, m.consumer.workspace_id, -2 * PRICE + 1),
                Leg(ISSUANCE, None, 2 * PRICE - 1),
            ],
            kind="topup",
            note="out-of-band correction",
        )
    assert await invoke(client, m, "insert") == 402
    assert await balances(client, m.consumer) == {"balance": 1, "earnings": 0}
    async with app.state.engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(Record)) == 0
    await top_up(client, m.admin, m.consumer.workspace_id, PRICE - 1)
    assert [await invoke(client, m, "insert"), await invoke(client, m)] == [200, 402]
    await ledger_invariants(app)


@pytest.mark.skipif(not DATABASE_URL.startswith("postgresql"), reason="PostgreSQL holds")
async def test_holds_of_a_crashed_process_expire(app: FastAPI, client: AsyncClient) -> None:
    """A process that died mid-call left its hold: once expired, it is swept the first time it
    stands in the way of a call, and the RU are spendable again."""
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, PRICE)
    assert await invoke(client, m, "free") == 200
    wallet = await _wallet_of(app, m.consumer.workspace_id)
    async with app.state.engine.begin() as conn:
        await conn.execute(
            insert(WalletHold).values(
                id=new_id(),
                wallet_id=wallet,
                amount=PRICE,
                expires_at=utcnow() + timedelta(hours=1),
            )
        )
        await conn.execute(update(Wallet).where(Wallet.id == wallet).values(held=PRICE))
    assert await invoke(client, m) == 402  # a live hold is respected
    async with app.state.engine.begin() as conn:
        await conn.execute(update(WalletHold).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert await invoke(client, m) == 200
    await ledger_invariants(app)


async def test_deprecated_versions_and_dev_calls_are_charged_alike(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, 2 * PRICE)
    versions = data_of(
        await client.get(f"/api/v1/apps/{m.app_id}/versions", headers=m.builder.headers)
    )
    version = versions["list"][0]["version"]
    response = await client.patch(
        f"/api/v1/apps/{m.app_id}/versions/{version}",
        json={"deprecated": True},
        headers=m.builder.headers,
    )
    data_of(response)
    body = {"appId": m.app_id, "api": "priced", "version": version, "args": {}}
    called = await client.post("/api/v1/invocations", json=body, headers={"X-Api-Key": m.secret})
    assert called.status_code == 200
    assert "deprecation" in called.headers
    assert await balances(client, m.consumer) == {"balance": PRICE, "earnings": 0}
    # the builder's own dev call pays the cost only, from its own (empty) wallet: refused
    dev = {"appId": m.app_id, "api": "priced", "version": "dev", "args": {}}
    response = await client.post("/api/v1/invocations", json=dev, headers=m.builder.headers)
    assert response.status_code == 402
    await top_up(client, m.admin, m.builder.workspace_id, COST)
    response = await client.post("/api/v1/invocations", json=dev, headers=m.builder.headers)
    assert response.status_code == 200
    assert await balances(client, m.builder) == {"balance": 0, "earnings": PRICE - COST}
    await ledger_invariants(app)
