"""`callApi` and ad-hoc workflows as a builder debugging them sees them: a step that cannot run
its callee names itself, a pin is exactly a version, and an encrypted field stays masked in a
debug trace wherever a later step (of the caller too) copies it."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.core.settings import Settings
from tests.e2e._apps import new_api, new_app
from tests.e2e._billing import balances, ledger_invariants, top_up
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, make_admin, register

PHONE = "+44 20 7946 0000"
USERS = [
    {"name": "name", "type": "string"},
    {"name": "phone", "type": "string", "encrypted": True},
]
ADD_USER = {
    "id": "user",
    "type": "insert",
    "collection": "users",
    "data": {"name": "ann", "phone": PHONE},
}  # 2 RU


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def _builder(app: FastAPI, client: AsyncClient, credits: int) -> tuple[User, str]:
    """A builder holding `credits` RU and an app with a `users` collection (`phone`
    encrypted)."""
    user = await register(client)
    app_id = await new_app(client, user.headers, "Vault")
    body = {"appId": app_id, "name": "users", "fields": USERS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))
    if credits:
        await top_up(client, await make_admin(app, client), user.workspace_id, credits)
    return user, app_id


async def _run(client: AsyncClient, user: User, app_id: str, *steps: Any, **extra: Any) -> Response:
    body = {"appId": app_id, "steps": list(steps), **extra}
    return await client.post("/api/v1/workflows", json=body, headers=user.headers)


async def test_a_callapi_step_that_cannot_run_its_callee_names_itself(
    app: FastAPI, client: AsyncClient
) -> None:
    """No such API, a disabled pinned version, args the callee's params refuse: the error
    carries the `callApi` step's id (as every call-time failure names its step). Without it a
    `dev` call of an API that exists answered a bare 404 `api_not_found`, and a call whose own
    args were fine an `invalid_arguments` naming a param it never sent. Nothing is charged."""
    user, app_id = await _builder(app, client, 10)
    params = [{"name": "name", "type": "string", "required": True}]
    hello = {"id": "hi", "type": "set", "value": {"expr": "'hi ' + args.name"}}
    await new_api(client, user.headers, app_id, "greet", params=params, steps=[hello])
    await new_api(client, user.headers, app_id, "off", steps=[hello], enabled=False)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=user.headers
    )
    assert data_of(published)["version"] == "1.0.0"
    missing = {"id": "c", "type": "callApi", "api": "nowhere"}
    await new_api(client, user.headers, app_id, "outer", steps=[missing], price=0)

    cases = [
        (missing, 404, "api_not_found"),
        ({"id": "c", "type": "callApi", "api": "greet", "version": "2.0.0"}, 404, ""),
        ({"id": "c", "type": "callApi", "api": "off", "version": "1.0.0"}, 403, "api_disabled"),
        ({"id": "c", "type": "callApi", "api": "greet", "args": {"nom": "x"}}, 400, ""),
    ]
    for step, status, reason in cases:
        response = await _run(client, user, app_id, ADD_USER, step)
        data = response.json()["data"]
        assert response.status_code == status, response.text
        assert data["stepId"] == "c", data
        if reason:
            assert data["error"] == reason, data
    body = {"appId": app_id, "api": "outer", "version": "dev"}
    via_gateway = await client.post("/api/v1/invocations", json=body, headers=user.headers)
    assert assert_error(via_gateway, 404, "api_not_found")["stepId"] == "c"
    # A callee step's own failure still names that step.
    refused = await _run(client, user, app_id, {"id": "c", "type": "callApi", "api": "greet"})
    assert assert_error(refused, 400, "missing_parameters")["stepId"] == "c"
    throw = {"id": "no", "type": "throw", "status": 409, "error": "taken"}
    await new_api(client, user.headers, app_id, "refuse", steps=[throw])
    refused = await _run(client, user, app_id, {"id": "c", "type": "callApi", "api": "refuse"})
    assert assert_error(refused, 409, "taken")["stepId"] == "no"

    assert (await balances(client, user))["balance"] == 10
    count = {"id": "n", "type": "count", "collection": "users"}
    assert data_of(await _run(client, user, app_id, count)) == {"n": 0}
    await ledger_invariants(app)


@pytest.mark.parametrize("pin", ["1.0.0\n", "1.0.0 "])
async def test_a_callapi_pin_is_exactly_a_version(
    app: FastAPI, client: AsyncClient, pin: str
) -> None:
    """`version` is `"dev"` or an exact `X.Y.Z`: `"1.0.0\\n"` passed the check (Python's `$`
    matches before a final newline), was saved, failed every call with 404 and every publish."""
    user, app_id = await _builder(app, client, 0)
    hello = {"id": "hi", "type": "set", "value": "hi"}
    await new_api(client, user.headers, app_id, "greet", steps=[hello])
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=user.headers
    )
    assert data_of(published)["version"] == "1.0.0"
    step = {"id": "c", "type": "callApi", "api": "greet", "version": pin}
    for response in [
        await client.post(
            f"/api/v1/apps/{app_id}/apis",
            json={"api": "pinned", "steps": [step]},
            headers=user.headers,
        ),
        await _run(client, user, app_id, step),
    ]:
        data = assert_error(response, 400, "invalid_definition")
        assert [e["field"] for e in data["errors"]] == ["steps.c.version"], data
    exact = {**step, "version": "1.0.0"}
    assert data_of(await _run(client, user, app_id, exact)) == {"c": {"hi": "hi"}}


async def test_an_encrypted_field_copied_by_a_later_step_is_masked_in_the_trace(
    app: FastAPI, client: AsyncClient
) -> None:
    """docs/builder.md: encrypted fields are masked in a debug trace "also where a later step
    copies them". They were masked by their key only: a `set` copying `phone` under another
    key showed it in clear — in one step list, and in a caller copying what its callee read."""
    user, app_id = await _builder(app, client, 10)
    await new_api(client, user.headers, app_id, "addUser", steps=[ADD_USER], price=2)
    copy_own = {"id": "copy", "type": "set", "value": {"tel": {"expr": "steps.user.phone"}}}
    call = {"id": "inner", "type": "callApi", "api": "addUser"}
    copy_callees = {
        "id": "copy",
        "type": "set",
        "value": {"tel": {"expr": "'call ' + steps.inner.user.phone"}},
    }
    for steps in ([ADD_USER, copy_own], [call, copy_callees]):
        traced = data_of(await _run(client, user, app_id, *steps, debug=1))
        assert PHONE in traced["result"]["copy"]["tel"]  # the answer is the builder's to give
        outputs = {entry["stepId"]: entry["output"] for entry in traced["trace"]}
        assert outputs["copy"]["tel"] in ("***", "call ***"), outputs
        assert PHONE not in str(traced["trace"])
    assert (await balances(client, user))["balance"] == 6
    await ledger_invariants(app)
