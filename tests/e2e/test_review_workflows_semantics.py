"""`POST /api/v1/workflows` as a user relies on it: a keyed run happens once however large its
answer, its `args` reach the steps as sent, a bad body is a 400 that costs and writes nothing,
and `callApi` steps to disabled or token-reading APIs end cleanly and refund the reservation."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.core.settings import Settings
from tests.e2e._apps import new_api, new_app
from tests.e2e._billing import ITEM_FIELDS, balances, ledger_invariants, top_up
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, make_admin, register

INSERT = {"id": "item", "type": "insert", "collection": "items", "data": {"n": 7}}  # 2 RU
COUNT = {"id": "total", "type": "count", "collection": "items"}  # 1 RU


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def _builder(app: FastAPI, client: AsyncClient, credits: int) -> tuple[User, str]:
    """A builder holding `credits` RU and an app with an `items` collection."""
    user = await register(client)
    app_id = await new_app(client, user.headers, "Ad hoc")
    body = {"appId": app_id, "name": "items", "fields": ITEM_FIELDS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))
    if credits:
        await top_up(client, await make_admin(app, client), user.workspace_id, credits)
    return user, app_id


async def _run(
    client: AsyncClient, headers: dict[str, str], app_id: str, *steps: Any, **extra: Any
) -> Response:
    body = {"appId": app_id, "steps": list(steps), **extra}
    return await client.post("/api/v1/workflows", json=body, headers=headers)


async def _records(client: AsyncClient, user: User, app_id: str) -> int:
    """Records of `items` in the user's partition (the count costs 1 RU)."""
    total: int = data_of(await _run(client, user.headers, app_id, COUNT))["total"]
    return total


async def test_a_keyed_workflow_with_an_answer_over_one_mebibyte_runs_and_charges_once(
    app: FastAPI, client: AsyncClient
) -> None:
    """A `debug` run answers its data and its trace, each up to 1 MiB: the management edge kept
    only answers up to 1 MiB, freed the key of a larger one, and the retry ran the workflow
    again — a second insert, a second charge."""
    user, app_id = await _builder(app, client, 10)
    keyed = {**user.headers, "Idempotency-Key": "big-debug-run"}
    big = {"id": "blob", "type": "set", "value": "x" * 600_000}  # in `data` and in the trace
    first = await _run(client, keyed, app_id, INSERT, big, debug=1)
    assert first.status_code == 200, first.text
    assert len(first.content) > 1024 * 1024
    again = await _run(client, keyed, app_id, INSERT, big, debug=1)
    assert again.status_code == 200, again.text
    assert again.headers.get("idempotent-replayed") == "1"
    assert again.content == first.content
    assert (await balances(client, user))["balance"] == 8
    assert await _records(client, user, app_id) == 1
    await ledger_invariants(app)


async def test_a_workflows_args_reach_the_steps_with_their_keys_as_sent(
    app: FastAPI, client: AsyncClient
) -> None:
    """Workflow args declare no params and pass through as given; the input model's whitespace
    trimming reached their keys, so `" a"` became `a` and overwrote the real `a`."""
    user, app_id = await _builder(app, client, 0)
    args = {" a": 1, "a": 2, "b\t": {" c ": 3}, "d ": None}
    echo = {"id": "echo", "type": "set", "value": {"expr": "args"}}
    answer = data_of(await _run(client, user.headers, app_id, echo, args=args))
    assert answer == {"echo": args}
    picked = {"id": "one", "type": "set", "value": {"expr": "args[' a'] * 10 + args.a"}}
    assert data_of(await _run(client, user.headers, app_id, picked, args=args)) == {"one": 12}


@pytest.mark.parametrize(
    ("body", "status", "reason", "field"),
    [
        ({"steps": "x"}, 400, "invalid_input", "steps"),
        ({"steps": {}}, 400, "invalid_input", "steps"),
        ({"steps": [INSERT], "args": [1]}, 400, "invalid_input", "args"),
        ({"steps": [INSERT], "args": "x"}, 400, "invalid_input", "args"),
        ({"steps": [INSERT], "extra": 1}, 400, "invalid_input", "extra"),
        ({"steps": [INSERT], "debug": "yes"}, 400, "invalid_input", "debug"),
        ({"steps": [INSERT] + [{**COUNT, "id": f"c{i}"} for i in range(200)]}, 400, "", "steps"),
        ({"steps": [INSERT, 1]}, 400, "invalid_definition", "steps.1"),
        ({"steps": [INSERT, INSERT]}, 400, "invalid_definition", "steps.item.id"),
        ({"steps": [INSERT, {"id": "z", "type": "nope"}]}, 400, "invalid_definition", ""),
        ({"steps": [{**INSERT, "collection": "nope"}]}, 400, "invalid_definition", ""),
        ({"steps": [{**INSERT, "extra": 1}]}, 400, "invalid_definition", "steps.item.extra"),
    ],
)
async def test_a_bad_workflow_body_is_a_400_that_costs_and_writes_nothing(
    app: FastAPI,
    client: AsyncClient,
    body: dict[str, Any],
    status: int,
    reason: str,
    field: str,
) -> None:
    user, app_id = await _builder(app, client, 10)
    response = await client.post(
        "/api/v1/workflows", json={"appId": app_id, **body}, headers=user.headers
    )
    assert response.status_code == status, response.text
    data = response.json()["data"]
    if reason:
        assert data["error"] == reason, data
    if field:
        assert [e["field"] for e in data["errors"]] == [field], data
    assert (await balances(client, user))["balance"] == 10
    assert await _records(client, user, app_id) == 0
    await ledger_invariants(app)


async def test_callapi_to_a_disabled_or_token_reading_api_ends_cleanly_and_refunds(
    app: FastAPI, client: AsyncClient
) -> None:
    """`dev` runs a disabled API (docs/builder.md: `enabled`), a pinned disabled version is 403
    `api_disabled`; a callee that reads the (absent) end-user token fails with a 400 naming its
    step. Refused runs are charged nothing and keep none of their writes."""
    user, app_id = await _builder(app, client, 10)
    await new_api(client, user.headers, app_id, "off", steps=[INSERT], enabled=False, price=2)
    whoami = {"id": "who", "type": "set", "value": {"expr": "token.sub"}}
    await new_api(
        client, user.headers, app_id, "me", steps=[whoami], auth={"requireToken": True}, price=0
    )
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=user.headers
    )
    assert data_of(published)["version"] == "1.0.0"

    pinned = {"id": "c", "type": "callApi", "api": "off", "version": "1.0.0"}
    assert_error(await _run(client, user.headers, app_id, COUNT, pinned), 403, "api_disabled")
    me = {"id": "c", "type": "callApi", "api": "me"}
    refused = await _run(client, user.headers, app_id, INSERT, me)
    assert assert_error(refused, 400, "expression_error")["stepId"] == "who"
    assert (await balances(client, user))["balance"] == 10

    on_dev = {"id": "c", "type": "callApi", "api": "off"}
    assert data_of(await _run(client, user.headers, app_id, on_dev))["c"]["item"]["n"] == 7
    assert (await balances(client, user))["balance"] == 8
    assert await _records(client, user, app_id) == 1
    await ledger_invariants(app)
