"""Two `apiforge serve` processes on ONE SQLite file (as `--workers 2` runs): money stays exact.

Each process keeps its wallets' balances in memory (`billing/charging.py`); the database's
conditional debit is what keeps two of them from overdrawing. These tests check, with real
processes: exactly the covered calls pass in total, every charge is one balanced transaction
with its request-log row, earnings and revenue are exact, a credit made through one process
(top-up, redemption) is spendable on the other, a balance spent on one is not spent again on
the other, the 10-keys limit holds across both, and a process killed mid-load leaves no half
charge. PostgreSQL's charging is checked across processes in `test_billing_concurrency.py`."""

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from apiforge.billing.models import PLATFORM_WALLETS, LedgerEntry
from apiforge.core.settings import Settings
from apiforge.datasets.models import Record
from apiforge.usage.models import RequestLog
from tests._servers import Servers, running_servers
from tests.conftest import DATABASE_URL
from tests.e2e._billing import (
    COST,
    PRICE,
    Market,
    balances,
    invoke,
    ledger_invariants,
    market,
    race,
    top_up,
    unlimited_plan,
)
from tests.e2e._keys import subscribe
from tests.e2e._workspaces import data_of

pytestmark = pytest.mark.skipif(
    bool(DATABASE_URL), reason="one SQLite file shared by two processes (embedded database only)"
)

CLIENTS = 32
REVENUE = PLATFORM_WALLETS["revenue"]
COSTS = {"priced": COST, "listed": COST, "insert": 2}  # tests/e2e/_billing.py


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


@asynccontextmanager
async def _two(settings: Settings) -> AsyncIterator[tuple[Servers, list[AsyncClient]]]:
    """Two server processes on the test's SQLite file, a client for each."""
    async with running_servers(settings, count=2) as servers:
        limits = httpx.Limits(max_connections=CLIENTS)
        https = [AsyncClient(base_url=url, timeout=60, limits=limits) for url in servers]
        try:
            yield servers, https
        finally:
            for http in https:
                await http.aclose()


async def _charges(app: FastAPI, m: Market) -> tuple[int, int]:
    """(call transactions of the consumer, its 2xx request-log rows), after checking that every
    call transaction is whole: the caller's debit, the builder's profit, the platform's cost."""
    async with app.state.engine.connect() as conn:
        legs = (
            await conn.execute(
                select(LedgerEntry.transaction_id, func.count(), func.min(LedgerEntry.amount))
                .where(LedgerEntry.kind == "call")
                .group_by(LedgerEntry.transaction_id)
            )
        ).all()
        logged = await conn.scalar(
            select(func.count()).where(
                RequestLog.workspace_id == m.consumer.workspace_id, RequestLog.status == 200
            )
        )
    assert {(count, lowest) for _, count, lowest in legs} <= {(3, -PRICE)}
    return len(legs), int(logged or 0)


async def _exact(
    app: FastAPI, client: AsyncClient, m: Market, charged: int, left: int, cost: int = COST
) -> None:
    """`charged` calls (of `cost`) were paid for, to the unit, and `left` RU remain with the
    consumer."""
    assert await balances(client, m.consumer) == {"balance": left, "earnings": 0}
    assert await balances(client, m.builder) == {"balance": 0, "earnings": charged * (PRICE - cost)}
    wallets = await ledger_invariants(app)
    assert wallets[REVENUE] == charged * cost
    assert await _charges(app, m) == (charged, charged)


@pytest.mark.parametrize("api", ["priced", "listed", "insert"])
async def test_exactly_the_covered_calls_pass_across_two_processes(
    app: FastAPI, client: AsyncClient, settings: Settings, api: str
) -> None:
    """`priced` charges in the call's own transaction, `listed` through each process's writer,
    `insert` with a record write. Then a top-up made by a third party (the in-process app) after
    both processes cached the empty wallet is spent exactly, neither more nor less."""
    covered, total = 150, 400
    cost = COSTS[api]
    m = await market(app, client)
    await unlimited_plan(client, m)
    await top_up(client, m.admin, m.consumer.workspace_id, covered * PRICE)
    async with _two(settings) as (_, https):
        assert await race(https, m, total, api, workers=CLIENTS) == {
            200: covered,
            402: total - covered,
        }
        await _exact(app, client, m, covered, 0, cost)
        await top_up(client, m.admin, m.consumer.workspace_id, 7 * PRICE)
        assert await race(https, m, 40, api, workers=CLIENTS) == {200: 7, 402: 33}
    await _exact(app, client, m, covered + 7, 0, cost)
    if api == "insert":
        async with app.state.engine.connect() as conn:
            records = await conn.scalar(
                select(func.count()).where(Record.partition == m.consumer.workspace_id)
            )
        assert records == covered + 7  # a refused call's write rolled back with it


async def test_a_credit_made_on_one_process_is_spendable_on_the_other(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    """The second process has cached the empty wallet (its refusal read it): a top-up, or a
    redemption of earnings, made through the first must not be refused there until restart."""
    m = await market(app, client)
    async with _two(settings) as (_, (one, two)):
        assert await invoke(two, m) == 402
        await top_up(one, m.admin, m.consumer.workspace_id, 3 * PRICE)
        assert [await invoke(two, m) for _ in range(4)] == [200, 200, 200, 402]
        await top_up(one, m.admin, m.consumer.workspace_id, 2 * PRICE)
        assert [await invoke(one, m) for _ in range(3)] == [200, 200, 402]
        assert await invoke(two, m) == 402  # spent on the other: not spent again

        # the builder calls its own app (pays the cost only) from an empty balance ...
        await subscribe(one, m.builder.headers, m.app_id)
        key = data_of(
            await one.post(
                "/api/v1/api-keys",
                json={"type": "app", "appId": m.app_id, "name": "own"},
                headers=m.builder.headers,
            )
        )["key"]
        own = Market(m.builder, m.builder, m.admin, m.app_id, key)
        assert await invoke(two, own) == 402
        # ... and redeems 3 RU of its earnings through the other process
        redeemed = await one.post(
            "/api/v1/redemptions", json={"amount": 3 * COST}, headers=m.builder.headers
        )
        data_of(redeemed)
        assert [await invoke(two, own) for _ in range(4)] == [200, 200, 200, 402]
    assert await balances(client, m.consumer) == {"balance": 0, "earnings": 0}
    assert await balances(client, m.builder) == {"balance": 0, "earnings": 5 * (PRICE - COST) - 3}
    wallets = await ledger_invariants(app)
    assert wallets[REVENUE] == 5 * COST + 3 * COST


async def test_a_balance_spent_on_one_process_is_refused_on_the_other(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    """The second process's cache says 2 calls are left; the first spends them. Its next call
    (writing a record) is refused with 402 and leaves nothing: no record, no charge."""
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, 3 * PRICE)
    async with _two(settings) as (_, (one, two)):
        assert await invoke(two, m) == 200
        assert [await invoke(one, m) for _ in range(2)] == [200, 200]
        assert [await invoke(two, m, "insert") for _ in range(2)] == [402, 402]
    async with app.state.engine.connect() as conn:
        records = await conn.scalar(
            select(func.count()).where(Record.partition == m.consumer.workspace_id)
        )
    assert records == 0
    await _exact(app, client, m, 3, 0)


async def test_the_ten_keys_limit_holds_across_two_processes(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    m = await market(app, client)  # the consumer's subscription holds 1 key already
    body: dict[str, Any] = {"type": "app", "appId": m.app_id, "name": "k"}
    async with _two(settings) as (_, https):
        responses = await asyncio.gather(
            *(
                https[i % 2].post("/api/v1/api-keys", json=body, headers=m.consumer.headers)
                for i in range(20)
            )
        )
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 9, 400: 11}, [r.text for r in responses if r.status_code >= 500]
    refused = {r.json()["data"]["error"] for r in responses if r.status_code == 400}
    assert refused == {"too_many_api_keys"}


@pytest.mark.parametrize("api", ["priced", "listed"])
async def test_a_process_killed_mid_load_leaves_no_half_charge(
    app: FastAPI, client: AsyncClient, settings: Settings, api: str
) -> None:
    """SIGKILL one process while both charge (in the calls' transactions, or through the
    writer's group commits): what it committed is whole (entries and log row), what it didn't
    is nothing, and the survivor spends exactly the rest of the balance."""
    covered = 300
    m = await market(app, client)
    await unlimited_plan(client, m)
    await top_up(client, m.admin, m.consumer.workspace_id, covered * PRICE)
    body = {"appId": m.app_id, "api": api, "version": "latest", "args": {}}
    headers = {"X-Api-Key": m.secret}
    statuses: Counter[int | str] = Counter()
    busy = asyncio.Event()  # enough calls have been charged: time to kill
    async with _two(settings) as (servers, https):

        async def worker(http: AsyncClient) -> None:
            for _ in range(40):
                try:
                    response = await http.post("/api/v1/invocations", json=body, headers=headers)
                except httpx.TransportError:
                    statuses["lost"] += 1  # the killed process: its answer never came
                    return
                assert response.status_code in (200, 402), response.text
                statuses[response.status_code] += 1
                if statuses[200] >= 60:
                    busy.set()

        async def killer() -> None:
            await busy.wait()
            servers.kill(0)

        await asyncio.gather(killer(), *(worker(https[i % 2]) for i in range(CLIENTS // 2)))
        assert statuses["lost"] > 0  # the kill landed while calls were in flight
        # the survivor spends what is left, exactly
        while await invoke(https[1], m, api) == 200:
            statuses[200] += 1
    assert statuses[200] <= covered
    charged, logged = await _charges(app, m)
    assert charged == logged == covered
    await _exact(app, client, m, covered, 0)
