"""Review of `dev` callers' costs against collection changes: a saved API's cost counts its
`callApi` callees as `dev` has them (`test_review_cost_callers.py`), and a callee whose
collection is missing compiles to nothing, so it adds nothing.

The bug found: only saving an API priced its callers again. A wrapper saved while its callee's
collection was deleted (or renamed, or missing a field the callee reads) cost nothing for it;
once the collection was back, every `dev` call of the wrapper ran the callee's priced steps
unpaid. Creating, changing or deleting a collection now prices the app's `dev` callers again,
and refuses (400, nothing changed) a change that would put one past 10^12 RU.
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

HITS = {"name": "hits", "fields": [{"name": "n", "type": "integer"}]}
WRAPPER = [{"id": "inner", "type": "callApi", "api": "inner"}]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


def _counts(n: int) -> list[dict[str, Any]]:
    """`n` steps of 1 RU each (a count of `hits` where `n` is 1)."""
    where = {"n": {"_eq": 1}}
    return [
        {"id": f"c{i}", "type": "count", "collection": "hits", "filter": where} for i in range(n)
    ]


async def _hits_id(client: AsyncClient, owner: User, app_id: str) -> str:
    listed = data_of(await client.get(f"/api/v1/datasets?appId={app_id}", headers=owner.headers))
    hits_id: str = next(c["id"] for c in listed["list"] if c["name"] == "hits")
    return hits_id


async def _replace(client: AsyncClient, owner: User, url: str, body: dict[str, Any]) -> None:
    """PUT the collection at `url` (If-Match: its current version)."""
    version = data_of(await client.get(url, headers=owner.headers))["version"]
    headers = {**owner.headers, "If-Match": f'"{version}"'}
    data_of(await client.put(url, json=body, headers=headers))


async def test_a_callers_cost_follows_its_callees_collection_coming_back(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    admin = await make_admin(app, client)
    app_id = await hits_app(client, owner, "Collections")
    await new_api(client, owner.headers, app_id, "inner", price=5, steps=_counts(5))
    hits = await _hits_id(client, owner, app_id)
    data_of(await client.delete(f"/api/v1/datasets/{hits}", headers=owner.headers))
    # `inner` cannot run without `hits`: a wrapper saved now costs nothing for it.
    wrapper = await new_api(client, owner.headers, app_id, "wrapper", price=10, steps=WRAPPER)
    assert await api_cost(client, owner, app_id, wrapper) == 0
    body = {"appId": app_id, **HITS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    assert await api_cost(client, owner, app_id, wrapper) == 5

    await top_up(client, admin, owner.workspace_id, 100)
    call = {"appId": app_id, "api": "wrapper", "version": "dev"}
    data_of(await client.post("/api/v1/invocations", json=call, headers=owner.headers))
    assert (await balances(client, owner))["balance"] == 100 - 5

    # Renamed away, the callee runs nothing again; renamed back, it is paid for again.
    url = f"/api/v1/datasets/{await _hits_id(client, owner, app_id)}"
    await _replace(client, owner, url, {**HITS, "name": "gone"})
    assert await api_cost(client, owner, app_id, wrapper) == 0
    await _replace(client, owner, url, HITS)
    assert await api_cost(client, owner, app_id, wrapper) == 5
    # The field the callee filters on, removed then added back: the same.
    await _replace(
        client, owner, url, {"name": "hits", "fields": [{"name": "m", "type": "integer"}]}
    )
    assert await api_cost(client, owner, app_id, wrapper) == 0
    await _replace(client, owner, url, HITS)
    assert await api_cost(client, owner, app_id, wrapper) == 5
    await ledger_invariants(app)


async def test_a_collection_that_would_put_a_caller_past_one_movement_is_refused(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    admin = await make_admin(app, client)
    app_id = await hits_app(client, owner, "Collections")
    priced = await client.put(
        "/api/v1/admin/pricing/getMany", json={"cost": 10**9}, headers=admin.headers
    )
    data_of(priced)
    page = {"id": "page", "type": "getMany", "collection": "hits", "pageSize": 1000}
    await new_api(client, owner.headers, app_id, "inner", price=10**12, steps=[page])
    hits = await _hits_id(client, owner, app_id)
    data_of(await client.delete(f"/api/v1/datasets/{hits}", headers=owner.headers))
    loop = [for_each("each", 10_000, *WRAPPER)]
    caller = await new_api(client, owner.headers, app_id, "caller", price=10**12, steps=loop)
    body = {"appId": app_id, **HITS}
    refused = await client.post("/api/v1/datasets", json=body, headers=owner.headers)
    too_dear = 500 * 50 * 10**9  # the caller's 500 step runs of a 1,000-record page
    assert assert_error(refused, 400, "invalid_definition")["errors"] == [
        {
            "field": "steps",
            "message": f"API caller, which calls another API, could then cost {too_dear} RU, "
            f"over the most a call may cost ({10**12})",
        }
    ]
    listed = data_of(await client.get(f"/api/v1/datasets?appId={app_id}", headers=owner.headers))
    assert listed["totalCount"] == 0
    assert await api_cost(client, owner, app_id, caller) == 0
