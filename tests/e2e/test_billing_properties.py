"""Property: whatever sequence of top-ups, calls (succeeding, failing, refused), self-calls,
redemptions, withdrawals and admin decisions happens, every ledger transaction balances, every
wallet's balance equals the sum of its entries, no wallet but the issuance wallet is negative,
and every balance is exactly what a simple model of the rules predicts."""

from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apiforge.billing.models import PLATFORM_WALLETS
from apiforge.core.settings import Settings
from tests.e2e._billing import COST, PRICE, Market, balances, ledger_invariants, market, top_up
from tests.e2e._workspaces import data_of

Op = tuple[str, Any]
OPS = st.one_of(
    st.tuples(st.just("topup"), st.integers(1, 4 * PRICE)),
    st.tuples(st.just("builder_topup"), st.integers(1, 2 * PRICE)),
    st.tuples(st.just("call"), st.booleans()),  # True: the call fails after its steps began
    st.tuples(st.just("self_call"), st.none()),
    st.tuples(st.just("list_call"), st.none()),  # charged through SQLite's shared writer
    st.tuples(st.just("redeem"), st.integers(1, 3 * PRICE)),
    st.tuples(st.just("withdraw"), st.integers(1, 3 * PRICE)),
    st.tuples(st.just("decide"), st.booleans()),  # True: approve the oldest pending one
)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


@dataclass
class Model:
    consumer: int
    earnings: int
    builder: int
    revenue: int
    escrow: int
    payouts: int
    pending: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class World:
    """What examples of one test run share (hypothesis calls the test once per example)."""

    app: Any = None
    m: Market | None = None
    model: Model | None = None


WORLD = World()


async def _apply(client: AsyncClient, m: Market, model: Model, op: Op) -> None:
    kind, value = op
    body: dict[str, Any]
    if kind == "topup":
        await top_up(client, m.admin, m.consumer.workspace_id, value)
        model.consumer += value
    elif kind == "builder_topup":
        await top_up(client, m.admin, m.builder.workspace_id, value)
        model.builder += value
    elif kind in ("call", "self_call", "list_call"):
        fail = bool(value)
        args = {} if kind == "list_call" else {"fail": fail}
        api = "listed" if kind == "list_call" else "priced"
        body = {"appId": m.app_id, "api": api, "version": "latest", "args": args}
        own = kind == "self_call"
        headers = m.builder.headers if own else {"X-Api-Key": m.secret}
        response = await client.post("/api/v1/invocations", json=body, headers=headers)
        debit = COST if own else PRICE
        funds = model.builder if own else model.consumer
        expected = 402 if funds < debit else 400 if fail else 200
        assert response.status_code == expected, response.text
        if expected == 200:
            if own:
                model.builder -= COST
            else:
                model.consumer -= PRICE
                model.earnings += PRICE - COST
            model.revenue += COST
    elif kind == "redeem":
        body = {"amount": value}
        response = await client.post("/api/v1/redemptions", json=body, headers=m.builder.headers)
        assert response.status_code == (200 if value <= model.earnings else 402), response.text
        if response.status_code == 200:
            model.earnings -= value
            model.builder += value
    elif kind == "withdraw":
        body = {"amount": value, "note": "payout"}
        response = await client.post("/api/v1/withdrawals", json=body, headers=m.builder.headers)
        assert response.status_code == (200 if value <= model.earnings else 402), response.text
        if response.status_code == 200:
            model.earnings -= value
            model.escrow += value
            model.pending.append((data_of(response)["id"], value))
    elif kind == "decide" and model.pending:
        withdrawal_id, amount = model.pending.pop(0)
        status = "approved" if value else "rejected"
        response = await client.patch(
            f"/api/v1/admin/withdrawals/{withdrawal_id}",
            json={"status": status},
            headers=m.admin.headers,
        )
        assert data_of(response)["status"] == status
        model.escrow -= amount
        if value:
            model.payouts += amount
        else:
            model.earnings += amount


@hypothesis_settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(OPS, max_size=12))
async def test_ledger_stays_balanced_and_matches_the_rules(
    app: FastAPI, client: AsyncClient, ops: list[Op]
) -> None:
    # One app (and database) for all examples: state carries over, so later examples start from
    # whatever balances earlier ones left, and the invariants must hold across all of them.
    if WORLD.app is not app:
        WORLD.app, WORLD.m, WORLD.model = app, await market(app, client), Model(0, 0, 0, 0, 0, 0)
    m, model = WORLD.m, WORLD.model
    assert m is not None
    assert model is not None
    for op in ops:
        await _apply(client, m, model, op)
    wallets = await ledger_invariants(app)
    assert await balances(client, m.consumer) == {"balance": model.consumer, "earnings": 0}
    assert await balances(client, m.builder) == {
        "balance": model.builder,
        "earnings": model.earnings,
    }
    assert wallets[PLATFORM_WALLETS["revenue"]] == model.revenue
    assert wallets[PLATFORM_WALLETS["escrow"]] == model.escrow
    assert wallets[PLATFORM_WALLETS["payouts"]] == model.payouts
    assert sum(wallets.values()) == 0
