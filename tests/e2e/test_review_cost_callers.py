"""Review of the cost bound against `dev` callees: a saved API's cost counts its `callApi`
callees as `dev` has them, and a `dev` call is charged that stored cost.

The bug found: the cost was frozen when the caller was saved, so a wrapper saved before its
callee existed (or before the callee grew) ran the callee's priced steps in every `dev` call
for the cost of the wrapper alone (0 RU for a bare wrapper): the platform under-charged, and
the callee could even cost past what one call may be charged. Saving or deleting an API now
prices its `dev` callers again (those that reach it through `callApi`, as deep as calls nest),
and refuses (400) a change that would put a caller's cost past 10^12 RU.
"""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.core.settings import Settings
from tests.e2e._apps import new_api
from tests.e2e._billing import balances, ledger_invariants, top_up
from tests.e2e._costs import api_cost, for_each, hits_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, make_admin, register

MAX_STEP_PRICE = 10**9  # the most an administrator may set a step type's price to


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


def _counts(n: int) -> list[dict[str, Any]]:
    """`n` steps of 1 RU each (a count of `hits`)."""
    return [{"id": f"c{i}", "type": "count", "collection": "hits"} for i in range(n)]


def _calls(api: str) -> dict[str, Any]:
    return {"id": "inner", "type": "callApi", "api": api}


async def _dev_call(client: AsyncClient, owner: User, app_id: str, api: str) -> None:
    body = {"appId": app_id, "api": api, "version": "dev"}
    data_of(await client.post("/api/v1/invocations", json=body, headers=owner.headers))


async def test_a_callers_cost_follows_its_dev_callee_and_its_dev_calls_pay_it(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    admin = await make_admin(app, client)
    app_id = await hits_app(client, owner, "Callers")
    apis = f"/api/v1/apps/{app_id}/apis"
    # Saved before their callee exists: they cost nothing yet (the step would fail).
    wrapper = await new_api(
        client, owner.headers, app_id, "wrapper", price=100, steps=[_calls("inner")]
    )
    looped = [for_each("each", 3, _calls("wrapper"), items=[1, 2, 3])]
    outer = await new_api(client, owner.headers, app_id, "outer", price=100, steps=looped)
    assert await api_cost(client, owner, app_id, wrapper) == 0
    inner = await new_api(client, owner.headers, app_id, "inner", price=5, steps=_counts(5))
    assert await api_cost(client, owner, app_id, wrapper) == 5
    assert await api_cost(client, owner, app_id, outer) == 15

    await top_up(client, admin, owner.workspace_id, 100)
    await _dev_call(client, owner, app_id, "wrapper")
    await _dev_call(client, owner, app_id, "outer")
    assert (await balances(client, owner))["balance"] == 100 - 5 - 15

    # The callee grows: so do its callers.
    data_of(
        await client.patch(
            f"{apis}/{inner}", json={"steps": _counts(8), "price": 8}, headers=owner.headers
        )
    )
    assert await api_cost(client, owner, app_id, wrapper) == 8
    assert await api_cost(client, owner, app_id, outer) == 24
    await _dev_call(client, owner, app_id, "outer")
    assert (await balances(client, owner))["balance"] == 80 - 24

    # Renamed away, then deleted: the callers call nothing priced any more.
    renamed = {"api": "other"}
    data_of(await client.patch(f"{apis}/{inner}", json=renamed, headers=owner.headers))
    assert await api_cost(client, owner, app_id, outer) == 0
    data_of(await client.patch(f"{apis}/{inner}", json={"api": "inner"}, headers=owner.headers))
    assert await api_cost(client, owner, app_id, outer) == 24
    data_of(await client.delete(f"{apis}/{inner}", headers=owner.headers))
    assert await api_cost(client, owner, app_id, wrapper) == 0
    await ledger_invariants(app)


async def test_a_callee_that_would_put_a_caller_past_one_movement_is_refused(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    admin = await make_admin(app, client)
    app_id = await hits_app(client, owner, "Callers")
    await client.put(
        "/api/v1/admin/pricing/getMany", json={"cost": MAX_STEP_PRICE}, headers=admin.headers
    )
    loop = [for_each("each", 10_000, _calls("page"))]
    caller = await new_api(client, owner.headers, app_id, "caller", price=10**12, steps=loop)
    page = {"id": "page", "type": "getMany", "collection": "hits", "pageSize": 1000}
    body = {"api": "page", "price": 10**12, "steps": [page]}  # alone: 5e10 RU
    refused = await client.post(f"/api/v1/apps/{app_id}/apis", json=body, headers=owner.headers)
    too_dear = 500 * 50 * MAX_STEP_PRICE  # the caller's 500 step runs of it
    assert assert_error(refused, 400, "invalid_definition")["errors"] == [
        {
            "field": "steps",
            "message": f"API caller, which calls this API, could then cost {too_dear} RU, "
            f"over the most a call may cost ({10**12})",
        }
    ]
    listed = data_of(await client.get(f"/api/v1/apps/{app_id}/apis", headers=owner.headers))
    assert [a["api"] for a in listed["list"]] == ["caller"]
    assert await api_cost(client, owner, app_id, caller) == 0
