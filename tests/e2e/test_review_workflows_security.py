"""`POST /api/v1/workflows` as a security boundary: who may run one, which app and partition it
reaches, what its `callApi`, `jwtSign`, `userRight` and `httpRequest` steps may do, and what it
is charged."""

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from tests.e2e._apps import in_workspace, new_api, new_app
from tests.e2e._billing import ITEM_FIELDS, balances, ledger_invariants, top_up
from tests.e2e._keys import create_key, subscribe
from tests.e2e._traffic import slow_upstream
from tests.e2e._workspaces import assert_error, data_of, team
from tests.factories import User, make_admin, register

INSERT = {"id": "item", "type": "insert", "collection": "items", "data": {"n": 7}}  # 2 RU
COUNT = {"id": "total", "type": "count", "collection": "items"}  # 1 RU


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def _builder(client: AsyncClient) -> tuple[User, str]:
    """A builder (empty wallet) with an app holding an `items` collection."""
    user = await register(client)
    app_id = await new_app(client, user.headers, "Shop", visibility="public")
    body = {"appId": app_id, "name": "items", "fields": ITEM_FIELDS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))
    return user, app_id


async def _run(
    client: AsyncClient,
    headers: dict[str, str],
    app_id: str,
    *steps: dict[str, Any],
    **extra: Any,
) -> Response:
    body = {"appId": app_id, "steps": list(steps), **extra}
    return await client.post("/api/v1/workflows", json=body, headers=headers)


async def _count(app: FastAPI, client: AsyncClient, user: User, app_id: str) -> int:
    """Records of `items` in the user's partition (topped up by 1 RU to pay the count)."""
    await top_up(client, await make_admin(app, client), user.workspace_id, 1)
    total: int = data_of(await _run(client, user.headers, app_id, COUNT))["total"]
    return total


# --- callApi: the callee's steps are the workflow's to pay for --------------------------------


async def test_a_workflow_calling_an_api_pays_the_callees_cost(
    app: FastAPI, client: AsyncClient
) -> None:
    user, app_id = await _builder(client)
    await new_api(client, user.headers, app_id, "addItem", steps=[INSERT], price=2)
    call = {"id": "c", "type": "callApi", "api": "addItem"}
    # The wallet is empty: the callee's insert (2 RU) is not free because a workflow runs it.
    refused = await _run(client, user.headers, app_id, call)
    assert refused.status_code == 402, refused.text
    refusal = refused.json()["data"]
    assert refusal["error"] == "insufficient_balance"
    assert refusal["price"] == refusal["required"] == 2
    assert await _count(app, client, user, app_id) == 0

    await top_up(client, await make_admin(app, client), user.workspace_id, 2)
    assert data_of(await _run(client, user.headers, app_id, call))["c"]["item"]["n"] == 7
    assert (await balances(client, user))["balance"] == 0
    await ledger_invariants(app)


async def test_a_workflow_pays_for_what_its_callees_call_and_for_pinned_versions(
    app: FastAPI, client: AsyncClient
) -> None:
    user, app_id = await _builder(client)
    await new_api(client, user.headers, app_id, "addItem", steps=[INSERT], price=2)
    nested = {"id": "inner", "type": "callApi", "api": "addItem"}
    await new_api(client, user.headers, app_id, "addTwice", steps=[nested, COUNT], price=3)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=user.headers
    )
    assert data_of(published)["version"] == "1.0.0"
    # `dev` grows dearer after the publish; 1.0.0 keeps the cost it was published with.
    dearer = [INSERT, {**INSERT, "id": "again"}]
    api_id = data_of(await client.get(f"/api/v1/apps/{app_id}/apis", headers=user.headers))
    add_item = next(a["id"] for a in api_id["list"] if a["api"] == "addItem")
    updated = await client.patch(
        f"/api/v1/apps/{app_id}/apis/{add_item}",
        json={"steps": dearer, "price": 4},
        headers=user.headers,
    )
    data_of(updated)

    for step, price in [
        ({"id": "c", "type": "callApi", "api": "addTwice"}, 4 + 1),  # dev: 2 inserts + count
        ({"id": "c", "type": "callApi", "api": "addTwice", "version": "1.0.0"}, 2 + 1),
    ]:
        refused = await _run(client, user.headers, app_id, step)
        assert refused.status_code == 402, refused.text
        assert refused.json()["data"]["price"] == price
    assert await _count(app, client, user, app_id) == 0


async def test_a_workflow_nested_too_deeply_is_a_400_not_a_500(
    app: FastAPI, client: AsyncClient
) -> None:
    user, app_id = await _builder(client)
    deep: Any = 1
    for _ in range(900):  # ~2 KB of brackets: the compiler's recursion ran out of stack
        deep = [deep]
    for step in [
        {"id": "a", "type": "set", "value": deep},
        {"id": "a", "type": "insert", "collection": "items", "data": {"n": deep}},
    ]:
        response = await _run(client, user.headers, app_id, step, INSERT)
        data = assert_error(response, 400, "invalid_definition")
        assert data["errors"][0]["field"] == "steps"
        assert "nests deeper than 64 levels" in data["errors"][0]["message"]
    # As deep as a saved API may be still runs.
    shallow: Any = 1
    for _ in range(60):
        shallow = [shallow]
    assert data_of(
        await _run(client, user.headers, app_id, {"id": "a", "type": "set", "value": shallow})
    )


async def test_workflows_waiting_on_a_slow_upstream_hold_no_pooled_connection(
    settings: Settings,
) -> None:
    """Like gateway calls, a workflow gives its connection back before an `httpRequest` waits:
    with a pool of one (SQLite: two; PostgreSQL: three with its overflow), six workflows wait on
    a slow upstream at once, and the rest of the server still reaches the database (before, the
    third one, and every other request, waited for a connection until one ended)."""
    pooled = settings.model_copy(update={"http_allow_hosts": ["127.0.0.1"], "db_pool_size": 1})
    application = create_app(pooled)
    transport = ASGITransport(app=application, raise_app_exceptions=False)
    try:
        async with (
            AsyncClient(transport=transport, base_url="http://testserver") as client,
            slow_upstream() as upstream,
        ):
            user, app_id = await _builder(client)
            await top_up(client, await make_admin(application, client), user.workspace_id, 30)
            upstream.gate = asyncio.Event()
            fetch = {"id": "h", "type": "httpRequest", "url": upstream.url}
            runs = [
                asyncio.create_task(_run(client, user.headers, app_id, fetch)) for _ in range(6)
            ]
            await upstream.wait_in_flight(6, seconds=5)
            listed = await asyncio.wait_for(
                client.get("/api/v1/apps", headers=user.headers), timeout=5
            )
            assert data_of(listed)["totalCount"] == 1
            upstream.gate.set()
            done = await asyncio.gather(*runs)
            assert [r.status_code for r in done] == [200] * 6, [r.text for r in done]
            assert (await balances(client, user))["balance"] == 0
            await ledger_invariants(application)
    finally:
        await shutdown(application)


async def test_a_workflow_runs_only_on_the_workspaces_own_apps_for_editors_and_up(
    app: FastAPI, client: AsyncClient
) -> None:
    """Neither a subscriber of a public app nor another tenant can run steps (sign end-user
    tokens, grant rights, write records) in it; viewers and viewer-capped keys can't run any."""
    builder, app_id = await _builder(client)
    consumer = await register(client)
    await subscribe(client, consumer.headers, app_id)
    mint = {"id": "j", "type": "jwtSign", "sub": "root", "admin": True}
    grant = {"id": "g", "type": "userRight", "action": "grant", "userId": "u", "rights": ["all"]}
    for step in (mint, grant, INSERT):
        assert_error(await _run(client, consumer.headers, app_id, step), 404, "app_not_found")
    owner, team_id, members = await team(client, "viewer", "editor")
    team_app = await new_app(client, in_workspace(owner, team_id), "Team")
    as_viewer = in_workspace(members["viewer"], team_id)
    refused = await _run(client, as_viewer, team_app, {"id": "a", "type": "set", "value": 1})
    assert assert_error(refused, 403, "insufficient_role")["requiredRole"] == "editor"
    # A key of the editor acts as an editor; once the editor is a viewer, as a viewer.
    as_editor = in_workspace(members["editor"], team_id)
    _, secret = await create_key(client, as_editor, type="ws", role="editor")
    keyed = {"X-Api-Key": secret}
    assert data_of(await _run(client, keyed, team_app, {"id": "a", "type": "set", "value": 1}))
    demoted = await client.patch(
        f"/api/v1/workspaces/{team_id}/members/{members['editor'].account_id}",
        json={"role": "viewer"},
        headers=owner.headers,
    )
    data_of(demoted)
    refused = await _run(client, keyed, team_app, {"id": "a", "type": "set", "value": 1})
    assert_error(refused, 403, "insufficient_role")
    # The builder's own run works, in the builder's partition only.
    await top_up(client, await make_admin(app, client), builder.workspace_id, 2)
    data_of(await _run(client, builder.headers, app_id, INSERT))
    assert await _count(app, client, builder, app_id) == 1
