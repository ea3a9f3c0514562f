"""Concurrent calls against a wallet that covers only some of them: exactly that many succeed,
the rest get 402, and the ledger, the builder's earnings and the platform's revenue match to the
unit. PostgreSQL: 2,000 calls from 50 clients through two `apiforge serve` processes. SQLite
(one process by design): 500 calls from 50 asyncio clients through the in-process app."""

import httpx
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from apiforge.billing.models import PLATFORM_WALLETS
from apiforge.core.settings import Settings
from apiforge.usage.models import RequestLog
from tests._servers import running_servers
from tests.conftest import DATABASE_URL
from tests.e2e._billing import (
    COST,
    PRICE,
    Market,
    balances,
    ledger_invariants,
    market,
    race,
    top_up,
    unlimited_plan,
)

CLIENTS = 50


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def _check(app: FastAPI, client: AsyncClient, m: Market, covered: int) -> None:
    assert await balances(client, m.consumer) == {"balance": 0, "earnings": 0}
    assert await balances(client, m.builder) == {"balance": 0, "earnings": covered * (PRICE - COST)}
    wallets = await ledger_invariants(app)
    assert wallets[PLATFORM_WALLETS["revenue"]] == covered * COST
    async with app.state.engine.connect() as conn:
        logged = await conn.scalar(
            select(func.count()).where(
                RequestLog.workspace_id == m.consumer.workspace_id, RequestLog.status == 200
            )
        )
    assert logged == covered  # each charged call's log row committed with its charge


@pytest.mark.skipif(not DATABASE_URL.startswith("postgresql"), reason="needs PostgreSQL")
async def test_two_processes_never_overdraw(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    total, covered = 2000, 1234
    m = await market(app, client)
    await unlimited_plan(client, m)
    await top_up(client, m.admin, m.consumer.workspace_id, covered * PRICE)
    async with running_servers(settings, count=2) as urls:
        limits = httpx.Limits(max_connections=CLIENTS)
        https = [AsyncClient(base_url=url, timeout=60, limits=limits) for url in urls]
        try:
            statuses = await race(https, m, total, workers=CLIENTS)
        finally:
            for http in https:
                await http.aclose()
    assert statuses == {200: covered, 402: total - covered}
    await _check(app, client, m, covered)


@pytest.mark.parametrize("api", ["priced", "listed"])
async def test_one_process_never_overdraws(app: FastAPI, client: AsyncClient, api: str) -> None:
    """`priced` charges in the call's own transaction; `listed` (a prepared read, no connection
    of its own) through the process's writer, where concurrent charges share commits."""
    total, covered = 500, 123
    m = await market(app, client)
    await unlimited_plan(client, m)
    await top_up(client, m.admin, m.consumer.workspace_id, covered * PRICE)
    statuses = await race([client], m, total, api, workers=CLIENTS)
    assert statuses == {200: covered, 402: total - covered}
    await _check(app, client, m, covered)
    if not DATABASE_URL:
        writer = app.state.gateway_state.extra["charger"].writer
        assert (writer._own.connection is not None) == (api == "listed")
    # the same again after a top-up that arrives while nothing is in flight
    await top_up(client, m.admin, m.consumer.workspace_id, 7 * PRICE)
    again = await race([client], m, 20, api, workers=CLIENTS)
    assert again == {200: 7, 402: 13}
