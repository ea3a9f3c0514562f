"""A `callApi` step costs what its callee costs: the steps it runs are the caller's to pay for,
so a free API wrapping a dear one can't run it for nothing (the platform's cost included)."""

from typing import Any

from httpx import AsyncClient

from tests.e2e._apps import new_api
from tests.e2e._billing import balances
from tests.e2e._costs import api_cost, hits_app, publish_minor
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register


def _counts(n: int) -> list[dict[str, Any]]:
    """`n` steps of 1 RU each (a count of `hits`)."""
    return [{"id": f"c{i}", "type": "count", "collection": "hits"} for i in range(n)]


def _calls(api: str, **step: Any) -> list[dict[str, Any]]:
    return [{"id": "inner", "type": "callApi", "api": api, **step}]


async def test_a_wrapper_costs_its_callee_and_its_caller_pays_it(client: AsyncClient) -> None:
    owner, consumer = await register(client), await register(client)
    app_id = await hits_app(client, owner, "Wrapped")
    await new_api(client, owner.headers, app_id, "inner", price=50, steps=_counts(5))
    apis = f"/api/v1/apps/{app_id}/apis"
    free = {"api": "wrapper", "price": 0, "steps": _calls("inner")}
    refused = await client.post(apis, json=free, headers=owner.headers)
    assert assert_error(refused, 400, "price_below_cost")["errors"] == [
        {"field": "price", "message": "must be at least the cost, 5"}
    ]
    wrapper = await new_api(
        client, owner.headers, app_id, "wrapper", price=7, steps=_calls("inner")
    )
    assert await api_cost(client, owner, app_id, wrapper) == 5
    # Two levels down, and inside a forEach: its iterations times the callee's cost.
    loop = {
        "id": "each",
        "type": "forEach",
        "items": [1, 2],
        "maxIterations": 3,
        "steps": _calls("wrapper"),
    }
    outer = await new_api(client, owner.headers, app_id, "outer", price=15, steps=[loop])
    assert await api_cost(client, owner, app_id, outer) == 15
    data_of(await publish_minor(client, owner, app_id))
    _, secret = await app_key(client, consumer, app_id)
    before = await balances(client, consumer)
    earned = await balances(client, owner)
    answer = data_of(await call(client, secret, app_id, "wrapper"))
    assert answer == {"inner": {f"c{i}": 0 for i in range(5)}}  # the callee's steps ran
    assert (await balances(client, consumer))["balance"] == before["balance"] - 7
    # The builder earns the price less the cost: the platform took the callee's 5 RU.
    assert (await balances(client, owner))["earnings"] == earned["earnings"] + 2


async def test_calls_that_loop_are_costed_as_deep_as_they_can_nest(client: AsyncClient) -> None:
    """ping and pong call each other: a call nests at most 3 deep (then the step fails before
    its callee runs), so ping costs its own 1 RU and pong's, ping's and pong's again."""
    owner = await register(client)
    app_id = await hits_app(client, owner, "Wrapped")
    ping_steps = [*_counts(1), *_calls("pong")]
    ping = await new_api(client, owner.headers, app_id, "ping", price=10, steps=ping_steps)
    pong_steps = [*_counts(1), *_calls("ping")]
    pong = await new_api(client, owner.headers, app_id, "pong", price=10, steps=pong_steps)
    assert await api_cost(client, owner, app_id, pong) == 4
    # Saved before pong existed, ping is priced again when pong is saved.
    assert await api_cost(client, owner, app_id, ping) == 4
    data_of(await publish_minor(client, owner, app_id))
    assert await api_cost(client, owner, app_id, ping) == 4


async def test_a_pinned_callee_costs_what_its_version_was_priced_at(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await hits_app(client, owner, "Wrapped")
    inner = await new_api(client, owner.headers, app_id, "inner", price=5, steps=_counts(5))
    data_of(await publish_minor(client, owner, app_id))  # 1.0.0: inner costs 5
    url = f"/api/v1/apps/{app_id}/apis/{inner}"
    cheaper = {"steps": _counts(1)}
    data_of(await client.patch(url, json=cheaper, headers=owner.headers))
    pinned = _calls("inner", version="1.0.0")
    wrapper = await new_api(client, owner.headers, app_id, "wrapper", price=5, steps=pinned)
    assert await api_cost(client, owner, app_id, wrapper) == 5
    steps = _calls("inner")
    on_dev = await new_api(client, owner.headers, app_id, "onDev", price=1, steps=steps)
    assert await api_cost(client, owner, app_id, on_dev) == 1


async def test_publishing_refuses_a_caller_priced_below_its_callee_s_new_cost(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id = await hits_app(client, owner, "Wrapped")
    inner = await new_api(client, owner.headers, app_id, "inner", price=5, steps=_counts(5))
    await new_api(client, owner.headers, app_id, "wrapper", price=5, steps=_calls("inner"))
    dearer = {"price": 6, "steps": _counts(6)}
    url = f"/api/v1/apps/{app_id}/apis/{inner}"
    data_of(await client.patch(url, json=dearer, headers=owner.headers))
    refused = assert_error(await publish_minor(client, owner, app_id), 400, "price_below_cost")
    assert refused["errors"] == [
        {"field": "apis.wrapper.price", "message": "must be at least the cost, 6"}
    ]
