"""Review of the cost model's bounds: a call's static cost against what a call can consume, and
prices against what one ledger movement may move.

Bugs found:
- A `forEach` was costed at `maxIterations` (up to 10,000) times its body, and nested loops at
  the product of theirs, while one call runs at most 1,000 iterations, all loops together, and
  at most 500 steps: an API was charged up to 10x (nested: millions of times) what any call of
  it can consume. The cost now counts each loop for at most what the call's budgets allow, the
  iteration budget shared by nested loops, and never more than 500 runs of the dearest step.
- Prices and costs could reach 2**53 - 1 RU while one ledger movement is at most 10**12 RU: an
  API priced 3 * 10**12 moved 3 * 10**12 RU in one call. Prices and costs above 10**12 are now
  refused on save, import and publish (400), and a version priced above it before is refused
  at call time (403 `price_above_limit`), nothing moved.
"""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, update

from apiforge.billing.models import MAX_AMOUNT
from apiforge.builder.models import ApiDefinition, AppVersion
from apiforge.core.settings import Settings
from apiforge.engine.base import MAX_RU
from tests.e2e._apps import new_api
from tests.e2e._billing import balances, ledger_invariants, top_up
from tests.e2e._costs import api_cost, for_each, hits_app, publish_minor
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, make_admin, register

ITERATIONS = 1000  # RunLimits.max_iterations: all loops of one call together
STEPS = 500  # RunLimits.max_steps: steps one call runs, loop bodies included
COUNT = {"id": "n", "type": "count", "collection": "hits"}  # 1 RU at the seeded price
PAGE = {"id": "page", "type": "getMany", "collection": "hits", "pageSize": 1000}  # 1 x 50 RU


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def _set_price(client: AsyncClient, admin: User, step_type: str, cost: int) -> Any:
    url = f"/api/v1/admin/pricing/{step_type}"
    return await client.put(url, json={"cost": cost}, headers=admin.headers)


# --- forEach and the call's budgets -----------------------------------------------------------


async def test_a_loop_of_ten_thousand_is_costed_for_the_thousand_a_call_can_run(
    client: AsyncClient,
) -> None:
    """`maxIterations` 10,000 with a 1 RU body: never 10,000 runs of it (not even the 1,000
    iterations a call may run: beside the 50 RU page read, a call has 499 steps left for it).
    Changed by the fifth billing review: the step budget counts each step at its own price."""
    owner = await register(client)
    app_id = await hits_app(client, owner, "Bounds")
    steps = [PAGE, for_each("each", 10_000, COUNT)]
    api_id = await new_api(client, owner.headers, app_id, "loop", price=1050, steps=steps)
    assert await api_cost(client, owner, app_id, api_id) == 50 + (STEPS - 1) * 1
    # Below the budgets, `maxIterations` still counts as it is.
    steps = [PAGE, for_each("each", 300, COUNT)]
    api_id = await new_api(client, owner.headers, app_id, "small", price=1049, steps=steps)
    assert await api_cost(client, owner, app_id, api_id) == 50 + 300


async def test_nested_loops_share_one_iteration_budget(client: AsyncClient) -> None:
    """1,000 x 1,000 iterations was costed as a million bodies; a call runs 1,000 iterations in
    all (and 500 steps), so each body counts for at most that, dearest first."""
    owner = await register(client)
    app_id = await hits_app(client, owner, "Bounds")
    inner = for_each("inner", 1000, COUNT)
    outer = for_each("outer", 1000, inner)
    api_id = await new_api(client, owner.headers, app_id, "grid", price=1050, steps=[PAGE, outer])
    assert await api_cost(client, owner, app_id, api_id) == 50 + (STEPS - 1) * 1
    # Each level with a body of its own: the steps left after the page at 2 RU (the dearer
    # inner body: an insert) before 1 RU (the outer count); 1,000 iterations at 2 RU is more.
    insert = {"id": "add", "type": "insert", "collection": "hits", "data": {"n": 1}}
    outer = for_each("outer", 10_000, COUNT, for_each("inner", 10_000, insert))
    api_id = await new_api(client, owner.headers, app_id, "grid2", price=2050, steps=[PAGE, outer])
    assert await api_cost(client, owner, app_id, api_id) == 50 + (STEPS - 1) * 2


async def test_a_loop_is_never_costed_for_more_steps_than_a_call_runs(
    app: FastAPI, client: AsyncClient
) -> None:
    """A call runs at most 500 steps: a loop of 1 RU steps costs at most 500 RU (it was 10,000),
    and a call running 499 of them is charged that cost; 500 of them is a 422, charged nothing."""
    owner = await register(client)
    admin = await make_admin(app, client)
    app_id = await hits_app(client, owner, "Bounds")
    steps = [for_each("each", 10_000, COUNT, items={"expr": "args.items"})]
    params = [{"name": "items", "type": "array"}]
    await new_api(client, owner.headers, app_id, "loop", price=STEPS, params=params, steps=steps)
    apis = data_of(await client.get(f"/api/v1/apps/{app_id}/apis", headers=owner.headers))
    assert [(a["api"], a["cost"]) for a in apis["list"]] == [("loop", STEPS)]
    await top_up(client, admin, owner.workspace_id, 10 * STEPS)
    body = {"appId": app_id, "api": "loop", "version": "dev", "args": {"items": [0] * 499}}
    ran = await client.post("/api/v1/invocations", json=body, headers=owner.headers)
    assert len(data_of(ran)["each"]) == 499
    assert (await balances(client, owner))["balance"] == 10 * STEPS - STEPS
    body["args"] = {"items": [0] * 500}
    refused = await client.post("/api/v1/invocations", json=body, headers=owner.headers)
    assert assert_error(refused, 422, "limit_exceeded")["limit"] == "steps"
    assert (await balances(client, owner))["balance"] == 10 * STEPS - STEPS
    await ledger_invariants(app)


async def test_a_loop_calling_an_api_counts_its_callee_within_the_budgets(
    app: FastAPI, client: AsyncClient
) -> None:
    """The callee's steps count within the caller's budgets (the fifth billing review: it was
    counted as one step costing its whole cost, 500 times over); a run is charged that cost,
    which covers what it ran."""
    owner, consumer = await register(client), await register(client)
    admin = await make_admin(app, client)
    app_id = await hits_app(client, owner, "Bounds")
    inner_steps = [PAGE, for_each("each", 10_000, COUNT, items={"expr": "args.items"})]
    params = [{"name": "items", "type": "array", "default": []}]
    inner = await new_api(
        client, owner.headers, app_id, "inner", price=1050, params=params, steps=inner_steps
    )
    assert await api_cost(client, owner, app_id, inner) == 50 + (STEPS - 1) * 1
    step = {"id": "call", "type": "callApi", "api": "inner", "args": {"items": [1, 2, 3]}}
    outer_steps = [for_each("calls", 10_000, step, items={"expr": "args.n"})]
    outer_params = [{"name": "n", "type": "array"}]
    # 500 runs of the callee's page read at 50 RU (was 500 x 1,050; before, 10,000 x 10,050).
    price = STEPS * 50
    outer = await new_api(
        client, owner.headers, app_id, "outer", price=price, params=outer_params, steps=outer_steps
    )
    assert await api_cost(client, owner, app_id, outer) == price
    data_of(await publish_minor(client, owner, app_id))
    await top_up(client, admin, consumer.workspace_id, 2 * price)
    _, secret = await app_key(client, consumer, app_id)
    called = await call(client, secret, app_id, "outer", args={"n": [1, 2]})
    assert [len(entry["call"]["each"]) for entry in data_of(called)["calls"]] == [3, 3]
    assert (await balances(client, consumer))["balance"] == price
    await ledger_invariants(app)


# The property that no call consumes more than its cost, callees included, is
# test_review_billing_fifth.py's `test_no_call_consumes_more_than_its_cost_callees_included`.


# --- prices and costs against one ledger movement ---------------------------------------------


async def test_the_most_an_api_may_be_priced_is_one_ledger_movement(
    app: FastAPI, client: AsyncClient
) -> None:
    """10**12 RU (what one ledger movement may move) is the most a price may be, on create,
    change and import; a step list costing more is refused on save, whatever its price."""
    assert MAX_RU == MAX_AMOUNT == 10**12
    owner = await register(client)
    admin = await make_admin(app, client)
    app_id = await hits_app(client, owner, "Bounds")
    apis = f"/api/v1/apps/{app_id}/apis"
    most = [{"field": "price", "message": f"Input should be less than or equal to {10**12}"}]
    body = {"api": "dear", "price": 10**12 + 1, "steps": [COUNT]}
    created = await client.post(apis, json=body, headers=owner.headers)
    assert assert_error(created, 400, "invalid_input")["errors"] == most
    api_id = await new_api(client, owner.headers, app_id, "dear", price=10**12, steps=[COUNT])
    changed = await client.patch(
        f"{apis}/{api_id}", json={"price": 10**12 + 1}, headers=owner.headers
    )
    assert assert_error(changed, 400, "invalid_input")["errors"] == most
    document = {
        "format": "apiforge-app",
        "formatVersion": 1,
        "app": {"name": "Imported"},
        "collections": [{"name": "hits", "fields": [{"name": "n", "type": "integer"}]}],
        "apis": [{"api": "dear", "price": 10**12 + 1, "steps": [COUNT]}],
    }
    imported = await client.post("/api/v1/apps/import", json=document, headers=owner.headers)
    assert imported.status_code == 400, imported.text
    assert imported.json()["data"]["errors"][0]["field"].endswith("price")
    # The most an administrator may price a step type (10**9) keeps one step payable; a page of
    # 1,000 records at that price is 5 * 10**10 RU, and 500 of them (a loop) far past 10**12.
    assert (await _set_price(client, admin, "getMany", 10**9 + 1)).status_code == 400
    data_of(await _set_price(client, admin, "getMany", 10**9))
    steps = [for_each("pages", 10_000, PAGE)]
    refused = await client.post(
        apis, json={"api": "pages", "price": 10**12, "steps": steps}, headers=owner.headers
    )
    assert assert_error(refused, 400, "invalid_definition")["errors"] == [
        {
            "field": "steps",
            "message": f"these steps could cost {STEPS * 5 * 10**10} RU, over the most a call "
            f"may cost ({10**12})",
        }
    ]
    listed = data_of(await client.get(apis, headers=owner.headers))
    assert [(a["api"], a["price"]) for a in listed["list"]] == [("dear", 10**12)]
    # Publishing prices every API again: a saved API now costing more is refused the same way.
    await new_api(client, owner.headers, app_id, "one", price=10**12, steps=[PAGE])
    data_of(await _set_price(client, admin, "getMany", 1))
    cheap = await new_api(client, owner.headers, app_id, "cheap", price=STEPS * 50, steps=steps)
    assert await api_cost(client, owner, app_id, cheap) == STEPS * 50
    data_of(await _set_price(client, admin, "getMany", 10**9))
    published = assert_error(await publish_minor(client, owner, app_id), 400, "invalid_definition")
    assert published["errors"][0]["field"] == "apis.cheap.steps"
    versions = data_of(await client.get(f"/api/v1/apps/{app_id}/versions", headers=owner.headers))
    assert versions["totalCount"] == 0


async def _legacy_price(app: FastAPI, app_id: str, api: str, price: int) -> None:
    """Price `api` above the limit where it is stored (in `dev` and in every snapshot), as a
    save before the limit could."""
    async with app.state.engine.begin() as conn:
        await conn.execute(
            update(ApiDefinition)
            .where(ApiDefinition.app_id == app_id, ApiDefinition.api == api)
            .values(price=price)
        )
        rows = await conn.execute(
            select(AppVersion.id, AppVersion.snapshot).where(AppVersion.app_id == app_id)
        )
        for version_id, snapshot in rows.all():
            snapshot["apis"][api]["price"] = price
            await conn.execute(
                update(AppVersion).where(AppVersion.id == version_id).values(snapshot=snapshot)
            )


async def test_an_api_priced_above_one_movement_before_the_limit_moves_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    """A version priced 3 * 10**12 RU (possible before prices were held to 10**12): calling it
    moved 3 * 10**12 RU in one movement. It is now a 403 naming the limit, nothing moved, and
    its `dev` API can't be published again at that price."""
    owner, consumer = await register(client), await register(client)
    admin = await make_admin(app, client)
    app_id = await hits_app(client, owner, "Bounds")
    await new_api(client, owner.headers, app_id, "dear", price=10, steps=[COUNT])
    data_of(await publish_minor(client, owner, app_id))
    await _legacy_price(app, app_id, "dear", 3 * 10**12)
    for _ in range(4):
        await top_up(client, admin, consumer.workspace_id, 10**12)
    _, secret = await app_key(client, consumer, app_id)
    before = await ledger_invariants(app)
    refused = await call(client, secret, app_id, "dear")
    data = assert_error(refused, 403, "price_above_limit")
    assert (data["price"], data["max"]) == (3 * 10**12, 10**12)
    assert await ledger_invariants(app) == before
    assert await balances(client, consumer) == {"balance": 4 * 10**12, "earnings": 0}
    published = assert_error(await publish_minor(client, owner, app_id), 400, "invalid_input")
    assert published["errors"] == [
        {"field": "apis.dear.price", "message": f"Input should be less than or equal to {10**12}"}
    ]
