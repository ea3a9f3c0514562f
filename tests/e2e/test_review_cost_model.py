"""Review of the cost model: what an API costs (admin step prices, `if`, `forEach`, `callApi`),
what a call is charged, and what stays frozen when the administrator changes a price.

The bug found: publishing searched every value of a step for `callApi` steps, so an API whose
data merely looked like one (a `set` step's literal, an `insert`'s record) could not be
published (400 `invalid_definition`). Only step lists are searched now; a real `callApi` step
at any depth of `if`, `forEach` or `transaction` is still checked.
"""

from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select

from apiforge.billing.models import PLATFORM_WALLETS, LedgerEntry, Wallet
from apiforge.core.settings import Settings
from tests.e2e._apps import new_api, new_app
from tests.e2e._billing import balances, ledger_invariants, top_up
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, make_admin, register

COUNT = {"id": "total", "type": "count", "collection": "hits"}  # 1 RU at the seeded price
MAX_STEP_PRICE = 10**9  # the most an administrator may set a step type's price to
REVENUE = PLATFORM_WALLETS["revenue"]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def _app(client: AsyncClient, owner: User) -> str:
    app_id = await new_app(client, owner.headers, "Costs", visibility="public")
    body = {"appId": app_id, "name": "hits", "fields": [{"name": "n", "type": "integer"}]}
    data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    return app_id


async def _publish(client: AsyncClient, owner: User, app_id: str) -> Response:
    url = f"/api/v1/apps/{app_id}/versions"
    return await client.post(url, json={"bump": "minor"}, headers=owner.headers)


async def _cost(client: AsyncClient, owner: User, app_id: str, api_id: str) -> int:
    url = f"/api/v1/apps/{app_id}/apis/{api_id}"
    cost: int = data_of(await client.get(url, headers=owner.headers))["cost"]
    return cost


async def _set_price(client: AsyncClient, admin: User, step_type: str, cost: int) -> None:
    url = f"/api/v1/admin/pricing/{step_type}"
    data_of(await client.put(url, json={"cost": cost}, headers=admin.headers))


def _loops(*iterations: int, body: dict[str, Any] = COUNT) -> dict[str, Any]:
    """`body` inside nested `forEach` loops (outermost first): each level counts for what a
    call can run (500 steps, 1,000 iterations between them), no more."""
    step = body
    for level, most in enumerate(reversed(iterations)):
        loop = {"id": f"loop{level}", "type": "forEach", "items": [], "maxIterations": most}
        step = {**loop, "steps": [step]}
    return step


def _dev_pin(where: str) -> dict[str, Any]:
    """A `callApi` step pinned to `dev` (which no published version may call), nested in
    `where`: a step list of a container, however the builder spelled it."""
    pin = {"id": "pin", "type": "callApi", "api": "plain", "version": "dev"}
    condition = {"expr": "has(args.x)"}
    return {
        "if.then": {"id": "c", "type": "if", "condition": condition, "then": [pin]},
        "if.else": {"id": "c", "type": "if", "condition": condition, "then": [], "else": [pin]},
        "if.else_": {"id": "c", "type": "if", "condition": condition, "then": [], "else_": [pin]},
        "forEach.transaction": _loops(2, body={"id": "t", "type": "transaction", "steps": [pin]}),
    }[where]


async def test_data_shaped_like_a_call_api_step_calls_nothing_and_publishes(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await _app(client, owner)
    template = {"type": "callApi", "api": "notHere", "version": "dev"}
    steps = [
        {"id": "template", "type": "set", "value": {"steps": [{"id": "x", **template}]}},
        {"id": "saved", "type": "insert", "collection": "hits", "data": {"n": 1}},
        {"id": "echo", "type": "return", "value": template},
    ]
    api_id = await new_api(client, owner.headers, app_id, "templates", price=2, steps=steps)
    body = {"appId": app_id, "api": "templates", "version": "dev"}
    await top_up(client, await make_admin(app, client), owner.workspace_id, 10)
    answer = await client.post("/api/v1/invocations", json=body, headers=owner.headers)
    assert data_of(answer) == template
    published = data_of(await _publish(client, owner, app_id))
    assert published["version"] == "1.0.0"
    url = f"/api/v1/apps/{app_id}/versions/1.0.0"
    snapshot = data_of(await client.get(url, headers=owner.headers))["snapshot"]
    assert snapshot["apis"]["templates"]["cost"] == 2 == await _cost(client, owner, app_id, api_id)


@pytest.mark.parametrize("where", ["if.then", "if.else", "if.else_", "forEach.transaction"])
async def test_a_call_api_step_nested_anywhere_is_still_checked_at_publish(
    client: AsyncClient, where: str
) -> None:
    """Searching only step lists still finds every real `callApi` step: a pin to `dev` in any
    container is refused, as before (an unchecked pin would run unpaid steps later)."""
    owner = await register(client)
    app_id = await _app(client, owner)
    await new_api(client, owner.headers, app_id, "plain", steps=[COUNT], price=1)
    await new_api(client, owner.headers, app_id, "nested", steps=[_dev_pin(where)], price=2)
    refused = assert_error(await _publish(client, owner, app_id), 400, "invalid_definition")
    assert refused["errors"] == [
        {
            "field": "apis.nested.steps",
            "message": "callApi pins version dev, which a published version cannot call",
        }
    ]
    versions = data_of(await client.get(f"/api/v1/apps/{app_id}/versions", headers=owner.headers))
    assert versions["totalCount"] == 0


async def _call_entries(app: FastAPI, request_id: str) -> list[tuple[str, str | None, int, Any]]:
    """(wallet kind, workspace, amount, counterparty) of one call's ledger entries."""
    async with app.state.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    Wallet.kind,
                    LedgerEntry.workspace_id,
                    LedgerEntry.amount,
                    LedgerEntry.counterparty_workspace_id,
                    LedgerEntry.transaction_id,
                    LedgerEntry.kind,
                )
                .join(Wallet, Wallet.id == LedgerEntry.wallet_id)
                .where(LedgerEntry.request_id == request_id)
                .order_by(LedgerEntry.amount)
            )
        ).all()
    assert len({row.transaction_id for row in rows}) == 1  # one transaction
    assert {row[5] for row in rows} == {"call"}
    assert sum(row.amount for row in rows) == 0
    return [(row[0], row[1], row[2], row[3]) for row in rows]


async def test_an_admin_price_change_reaches_only_what_is_saved_or_published_after_it(
    app: FastAPI, client: AsyncClient
) -> None:
    """A published version is charged the cost it was priced at, whatever the administrator
    sets later; `dev` keeps an API's saved cost until it is saved again; the next publish uses
    the new price. Each call is one balanced transaction over the right wallets."""
    owner, consumer = await register(client), await register(client)
    admin = await make_admin(app, client)
    app_id = await _app(client, owner)
    api_id = await new_api(client, owner.headers, app_id, "hits", price=10, steps=[COUNT])
    data_of(await _publish(client, owner, app_id))  # 1.0.0: price 10, cost 1
    await _set_price(client, admin, "count", 4)
    await top_up(client, admin, consumer.workspace_id, 100)
    await top_up(client, admin, owner.workspace_id, 100)
    _, secret = await app_key(client, consumer, app_id)

    called = await call(client, secret, app_id, "hits")
    data_of(called)
    assert await _call_entries(app, called.headers["X-Request-ID"]) == [
        ("balance", consumer.workspace_id, -10, owner.workspace_id),
        ("revenue", None, 1, consumer.workspace_id),
        ("earnings", owner.workspace_id, 9, consumer.workspace_id),
    ]
    # The builder's own dev call pays the saved cost only (1), to the platform.
    dev = {"appId": app_id, "api": "hits", "version": "dev"}
    own = await client.post("/api/v1/invocations", json=dev, headers=owner.headers)
    data_of(own)
    assert await _call_entries(app, own.headers["X-Request-ID"]) == [
        ("balance", owner.workspace_id, -1, owner.workspace_id),
        ("revenue", None, 1, owner.workspace_id),
    ]
    assert await _cost(client, owner, app_id, api_id) == 1
    url = f"/api/v1/apps/{app_id}/apis/{api_id}"
    assert data_of(await client.patch(url, json={}, headers=owner.headers))["cost"] == 4
    own = await client.post("/api/v1/invocations", json=dev, headers=owner.headers)
    assert (await _call_entries(app, own.headers["X-Request-ID"]))[0][2] == -4

    data_of(await _publish(client, owner, app_id))  # 1.1.0: cost 4
    latest = await call(client, secret, app_id, "hits")
    pinned = await call(client, secret, app_id, "hits", version="1.0.0")
    assert [row[2] for row in await _call_entries(app, latest.headers["X-Request-ID"])] == [
        -10,
        4,
        6,
    ]
    assert [row[2] for row in await _call_entries(app, pinned.headers["X-Request-ID"])] == [
        -10,
        1,
        9,
    ]
    assert await balances(client, consumer) == {"balance": 70, "earnings": 0}
    assert await balances(client, owner) == {"balance": 95, "earnings": 24}
    wallets = await ledger_invariants(app)
    assert wallets[REVENUE] == 1 + 1 + 4 + 4 + 1


async def test_costs_beyond_any_price_are_refused_on_every_path(
    app: FastAPI, client: AsyncClient
) -> None:
    """Step prices at their maximum inside loops give costs past what one call may be charged
    (10**12 RU, one ledger movement): saving, changing, importing, publishing and running such
    steps is a 400 naming the problem, never a 500 or a wrapped number, and nothing is written.
    (Loops count for at most the call's budgets: 500 steps, 1,000 iterations; docs/builder.md.)"""
    owner = await register(client)
    admin = await make_admin(app, client)
    app_id = await _app(client, owner)
    page = {"id": "page", "type": "getMany", "collection": "hits", "pageSize": 1000}  # 50 x
    cheap = await new_api(
        client, owner.headers, app_id, "cheap", price=10_000, steps=[_loops(10_000)]
    )
    assert await _cost(client, owner, app_id, cheap) == 500  # 500 steps of 1 RU at most
    await _set_price(client, admin, "count", MAX_STEP_PRICE)
    await _set_price(client, admin, "getMany", MAX_STEP_PRICE)
    huge = [_loops(10_000, 10_000, 10_000, 10_000, 10_000, body=page)]  # 500 pages at 5e10 RU
    expected = f"these steps could cost {500 * 50 * MAX_STEP_PRICE} RU, over the most a call "
    expected += f"may cost ({10**12})"
    apis = f"/api/v1/apps/{app_id}/apis"
    body = {"api": "huge", "price": 10**12, "steps": huge}
    saved = await client.post(apis, json=body, headers=owner.headers)
    assert assert_error(saved, 400, "invalid_definition")["errors"] == [
        {"field": "steps", "message": expected}
    ]
    changed = await client.patch(f"{apis}/{cheap}", json={"steps": huge}, headers=owner.headers)
    assert assert_error(changed, 400, "invalid_definition")["errors"][0]["message"] == expected
    # `cheap` was priced at 1 RU a count (500 RU); at the new price it costs 5e11 RU.
    refused = assert_error(await _publish(client, owner, app_id), 400, "price_below_cost")
    assert refused["errors"] == [
        {"field": "apis.cheap.price", "message": f"must be at least the cost, {500 * 10**9}"}
    ]
    assert await _cost(client, owner, app_id, cheap) == 500
    versions = data_of(await client.get(f"/api/v1/apps/{app_id}/versions", headers=owner.headers))
    assert versions["totalCount"] == 0
    document = {
        "format": "apiforge-app",
        "formatVersion": 1,
        "app": {"name": "Imported"},
        "collections": [{"name": "hits", "fields": [{"name": "n", "type": "integer"}]}],
        "apis": [{"api": "huge", "price": 10**12, "steps": huge}],
    }
    imported = await client.post(
        "/api/v1/apps/import",
        content=orjson.dumps(document),
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert assert_error(imported, 400, "invalid_definition")["errors"][0]["message"] == expected
    listed = data_of(await client.get("/api/v1/apps", headers=owner.headers))
    assert [a["id"] for a in listed["list"]] == [app_id]
    run = await client.post(
        "/api/v1/workflows", json={"appId": app_id, "steps": huge}, headers=owner.headers
    )
    assert assert_error(run, 400, "invalid_definition")["errors"][0]["field"] == "steps"
    await ledger_invariants(app)


async def test_apis_calling_each_other_end_at_the_depth_limit_and_cost_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    """ping calls pong calls ping: costing them ends (as deep as calls may nest), and a call
    ends with 422 `callDepth` instead of recursing; a failed call is charged nothing."""
    owner, consumer = await register(client), await register(client)
    admin = await make_admin(app, client)
    app_id = await _app(client, owner)
    call_pong = {"id": "next", "type": "callApi", "api": "pong"}
    call_ping = {"id": "next", "type": "callApi", "api": "ping"}
    loop = {"id": "each", "type": "forEach", "items": [1], "maxIterations": 2}
    pong_steps = [COUNT, {**loop, "steps": [call_ping]}]
    await new_api(client, owner.headers, app_id, "pong", price=100, steps=pong_steps)
    ping_steps = [COUNT, {**loop, "steps": [call_pong]}]
    ping = await new_api(client, owner.headers, app_id, "ping", price=100, steps=ping_steps)
    # ping 1 + 2 * (pong 1 + 2 * (ping 1 + 2 * pong 1)): nesting stops below depth 3.
    assert await _cost(client, owner, app_id, ping) == 1 + 2 * (1 + 2 * (1 + 2 * 1))
    data_of(await _publish(client, owner, app_id))
    await top_up(client, admin, consumer.workspace_id, 100)
    await top_up(client, admin, owner.workspace_id, 100)
    _, secret = await app_key(client, consumer, app_id)
    before = await ledger_invariants(app)
    failed = await call(client, secret, app_id, "ping")
    limit = assert_error(failed, 422, "limit_exceeded")
    assert (limit["limit"], limit["max"]) == ("callDepth", 3)
    dev = {"appId": app_id, "api": "ping", "version": "dev"}
    own = await client.post("/api/v1/invocations", json=dev, headers=owner.headers)
    assert assert_error(own, 422, "limit_exceeded")["limit"] == "callDepth"
    assert await ledger_invariants(app) == before
