"""Helpers for the billing tests: a priced app, a paying consumer, top-ups, ledger checks."""

import asyncio
from collections import Counter
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from apiforge.billing.models import LedgerEntry, Wallet
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import data_of
from tests.factories import User, make_admin, register

PRICE = 10
COST = 1  # one `count` step at the seeded step price
ITEM_FIELDS = [{"name": "n", "type": "integer"}]
FLAG = [{"name": "fail", "type": "boolean", "default": False}]

# api -> (steps, price)
BILLING_APIS: dict[str, tuple[list[Any], int]] = {
    # cost 1: count; fails (400) when args.fail is true, after the count ran.
    "priced": (
        [
            {"id": "total", "type": "count", "collection": "items"},
            {
                "id": "check",
                "type": "assert",
                "condition": {"expr": "!args.fail"},
                "status": 400,
                "error": "asked_to_fail",
                "message": "failed on purpose",
            },
        ],
        PRICE,
    ),
    # cost 1: a page of items (a prepared read: the call never checks out a connection of its
    # own, so on SQLite its charge goes through the process's writer).
    "listed": ([{"id": "items", "type": "getMany", "collection": "items", "pageSize": 20}], PRICE),
    "free": ([{"id": "hello", "type": "set", "value": "hi"}], 0),
    # cost 2: writes a record; the charge commits with it or neither does.
    "insert": ([{"id": "item", "type": "insert", "collection": "items", "data": {"n": 1}}], PRICE),
}


@dataclass
class Market:
    """A builder with a published priced app, a consumer holding an app key, an admin."""

    builder: User
    consumer: User
    admin: User
    app_id: str
    secret: str


async def market(app: FastAPI, client: AsyncClient) -> Market:
    builder = await register(client)
    consumer = await register(client)
    admin = await make_admin(app, client)
    app_id = await new_app(client, builder.headers, "Shop", visibility="public")
    body = {"appId": app_id, "name": "items", "fields": ITEM_FIELDS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=builder.headers))
    for api, (steps, price) in BILLING_APIS.items():
        await new_api(client, builder.headers, app_id, api, params=FLAG, steps=steps, price=price)
    response = await client.post(
        f"/api/v1/apps/{app_id}/versions",
        json={"bump": "minor", "notes": "first"},
        headers=builder.headers,
    )
    data_of(response)
    _, secret = await app_key(client, consumer, app_id)
    return Market(builder, consumer, admin, app_id, secret)


async def top_up(client: AsyncClient, admin: User, workspace_id: str, amount: int) -> Any:
    response = await client.post(
        f"/api/v1/admin/wallets/{workspace_id}/credits",
        json={"amount": amount},
        headers=admin.headers,
    )
    return data_of(response)


async def invoke(client: AsyncClient, m: Market, api: str = "priced", *, fail: bool = False) -> int:
    response = await client.post(
        "/api/v1/invocations",
        json={"appId": m.app_id, "api": api, "version": "latest", "args": {"fail": fail}},
        headers={"X-Api-Key": m.secret},
    )
    if response.status_code == 402:
        assert response.json()["data"]["error"] == "insufficient_balance"
    return response.status_code


async def balances(
    client: AsyncClient, user: User, workspace_id: str | None = None
) -> dict[str, int]:
    headers = dict(user.headers)
    if workspace_id is not None:
        headers["X-Workspace-Id"] = workspace_id
    listed = data_of(await client.get("/api/v1/wallets", headers=headers))
    return {w["kind"]: w["balance"] for w in listed["list"]}


async def ledger_invariants(app: FastAPI) -> dict[str, int]:
    """Every transaction sums to zero, every balance equals the sum of its entries, nothing but
    the issuance wallet is negative, nothing is held. Returns wallet id -> balance."""
    async with app.state.engine.connect() as conn:
        unbalanced = (
            await conn.execute(
                select(LedgerEntry.transaction_id)
                .group_by(LedgerEntry.transaction_id)
                .having(func.sum(LedgerEntry.amount) != 0)
            )
        ).all()
        assert unbalanced == []
        sums = dict(
            (
                await conn.execute(
                    select(LedgerEntry.wallet_id, func.sum(LedgerEntry.amount)).group_by(
                        LedgerEntry.wallet_id
                    )
                )
            ).all()
        )
        wallets = (
            await conn.execute(select(Wallet.id, Wallet.kind, Wallet.balance, Wallet.held))
        ).all()
    for wallet in wallets:
        assert wallet.balance == int(sums.get(wallet.id, 0)), wallet
        assert wallet.held == 0, wallet
        if wallet.kind != "issuance":
            assert wallet.balance >= 0, wallet
    return {w.id: w.balance for w in wallets}


async def unlimited_plan(client: AsyncClient, m: "Market") -> None:
    """No plan limit refuses the consumer's calls: only its balance does."""
    quotas = {"requestsPerMinute": -1, "concurrentRequests": -1, "callsPerMonth": -1}
    await on_plan(client, m.admin, m.consumer.workspace_id, "unlimited", **quotas)


async def race(
    clients: list[AsyncClient], m: "Market", total: int, api: str = "priced", workers: int = 50
) -> Counter[int]:
    """`total` calls of `api` by `workers` concurrent workers spread over `clients`; the count of
    each status. Only 200 and 402 are expected: anything else fails at once."""
    tickets = iter(range(total))
    statuses: Counter[int] = Counter()
    body = {"appId": m.app_id, "api": api, "version": "latest", "args": {}}
    headers = {"X-Api-Key": m.secret}

    async def worker(http: AsyncClient) -> None:
        for _ in tickets:  # shared: each call is taken by exactly one worker
            response = await http.post("/api/v1/invocations", json=body, headers=headers)
            assert response.status_code in (200, 402), response.text
            statuses[response.status_code] += 1

    await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(workers)))
    return statuses
