"""`jwtSign`, `password`, `userRight`, `callApi` and `httpRequest` end to end: APIs built and
called over HTTP only, the issued token checked with the app's own secret."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.core.errors import AuthenticationError
from apiforge.engine.tokens import verify_end_user_token
from tests.e2e._apps import new_api, new_app, signing_secret
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

SIGN_IN_STEPS: list[dict[str, Any]] = [
    {"id": "hashed", "type": "password", "action": "hash", "password": {"expr": "args.password"}},
    {
        "id": "ok",
        "type": "password",
        "action": "verify",
        "password": {"expr": "args.attempt"},
        "hash": {"expr": "steps.hashed"},
    },
    {
        "id": "gate",
        "type": "assert",
        "condition": {"expr": "steps.ok"},
        "status": 401,
        "error": "wrong_password",
        "message": "Wrong password",
    },
    {
        "id": "grant",
        "type": "userRight",
        "action": "grant",
        "userId": {"expr": "args.user"},
        "target": "blog",
        "rights": ["post:write"],
    },
    {
        "id": "session",
        "type": "jwtSign",
        "sub": {"expr": "args.user"},
        "expiresIn": 3600,
        "rights": {"expr": "steps.grant"},
        "claims": {"plan": "free"},
    },
]
PRICE = 1000  # above any seeded step costs: these tests are about the steps, not pricing
SIGN_IN_PARAMS = [
    {"name": "user", "type": "string", "required": True},
    {"name": "password", "type": "string", "required": True, "sensitive": True},
    {"name": "attempt", "type": "string", "required": True, "sensitive": True},
]


async def _invoke(client: AsyncClient, user: User, app_id: str, api: str, **body: Any) -> Any:
    payload = {"appId": app_id, "api": api, "version": "dev", **body}
    return await client.post("/api/v1/invocations", json=payload, headers=user.headers)


async def test_sign_in_issues_a_token_for_this_app_only(app: FastAPI, client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    other_app = await new_app(client, user.headers, name="Other")
    await new_api(
        client,
        user.headers,
        app_id,
        "signIn",
        params=SIGN_IN_PARAMS,
        steps=SIGN_IN_STEPS,
        returnSteps=["session"],
        price=PRICE,
    )
    args = {"user": "u-1", "password": "pa55word!", "attempt": "pa55word!"}
    data = data_of(await _invoke(client, user, app_id, "signIn", args=args))
    token = data["session"]["token"]
    claims = verify_end_user_token(await signing_secret(app, app_id), app_id, token)
    assert claims["sub"] == "u-1"
    assert claims["rights"] == ["post:write"]
    assert claims["plan"] == "free"
    # The other app refuses it, with its own secret or even with this one.
    for secret in (await signing_secret(app, other_app), await signing_secret(app, app_id)):
        with pytest.raises(AuthenticationError) as caught:
            verify_end_user_token(secret, other_app, token)
        assert caught.value.reason == "invalid_token"

    wrong = {**args, "attempt": "nope"}
    assert_error(await _invoke(client, user, app_id, "signIn", args=wrong), 401, "wrong_password")


async def test_debug_trace_masks_passwords_hashes_and_tokens(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await new_api(
        client,
        user.headers,
        app_id,
        "signIn",
        params=SIGN_IN_PARAMS,
        steps=SIGN_IN_STEPS,
        price=PRICE,
    )
    args = {"user": "u-2", "password": "hunter2-long", "attempt": "hunter2-long"}
    data = data_of(await _invoke(client, user, app_id, "signIn", args=args, debug=1))
    token = data["result"]["session"]["token"]
    hashed = data["result"]["hashed"]
    shown = str(data["trace"])
    assert "hunter2-long" not in shown
    assert hashed not in shown
    assert token not in shown
    rows = {row["stepId"]: row for row in data["trace"]}
    assert rows["hashed"]["output"] == "***"
    assert rows["grant"]["output"] == ["post:write"]


async def test_call_api_runs_a_sibling_api(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await new_api(
        client,
        user.headers,
        app_id,
        "greet",
        params=[{"name": "name", "type": "string", "required": True}],
        steps=[{"id": "hello", "type": "set", "value": {"expr": "'Hello ' + args.name"}}],
    )
    await new_api(
        client,
        user.headers,
        app_id,
        "outer",
        steps=[
            {"id": "inner", "type": "callApi", "api": "greet", "args": {"name": "Ada"}},
            {"id": "missing", "type": "callApi", "api": "greet", "args": {}},
        ],
        returnSteps=["inner"],
    )
    response = await _invoke(client, user, app_id, "outer")
    # The callee's params are checked: the second call misses `name`.
    assert_error(response, 400, "missing_parameters")
    await new_api(
        client,
        user.headers,
        app_id,
        "outerOk",
        steps=[{"id": "inner", "type": "callApi", "api": "greet", "args": {"name": "Ada"}}],
    )
    data = data_of(await _invoke(client, user, app_id, "outerOk"))
    assert data == {"inner": {"hello": "Hello Ada"}}


async def test_call_api_cycle_ends_at_the_depth_limit(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await new_api(
        client,
        user.headers,
        app_id,
        "loop",
        steps=[{"id": "again", "type": "callApi", "api": "loop"}],
    )
    data = assert_error(await _invoke(client, user, app_id, "loop"), 422, "limit_exceeded")
    assert data["limit"] == "callDepth"


async def test_http_request_to_private_addresses_is_refused(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await new_api(
        client,
        user.headers,
        app_id,
        "fetch",
        params=[{"name": "url", "type": "string", "required": True}],
        steps=[{"id": "get", "type": "httpRequest", "url": {"expr": "args.url"}, "timeout": 2}],
        price=PRICE,
    )
    for url in (
        "http://127.0.0.1:8000/api/v1/version",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "http://2130706433/",
    ):
        response = await _invoke(client, user, app_id, "fetch", args={"url": url})
        data = assert_error(response, 400, "ssrf_blocked")
        assert data["stepId"] == "get"


async def test_step_definitions_are_checked_on_save(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    bad: list[tuple[dict[str, Any], str]] = [
        ({"id": "t", "type": "jwtSign", "sub": "u", "claims": {"aud": "x"}}, "steps.t.claims"),
        ({"id": "p", "type": "password", "action": "verify", "password": "x"}, "steps.p"),
        ({"id": "r", "type": "userRight", "action": "grant", "userId": "u"}, "steps.r"),
        ({"id": "h", "type": "httpRequest", "url": "http://x.example/", "timeout": 60}, "steps.h"),
        ({"id": "c", "type": "callApi", "api": "x", "version": "latest"}, "steps.c.version"),
    ]
    for step, field in bad:
        response = await client.post(
            f"/api/v1/apps/{app_id}/apis",
            json={"api": "broken", "steps": [step]},
            headers=user.headers,
        )
        data = assert_error(response, 400, "invalid_definition")
        assert data["errors"][0]["field"].startswith(field), data
    listing = data_of(await client.get(f"/api/v1/apps/{app_id}/apis", headers=user.headers))
    assert listing["list"] == []
