"""`jwtSign`, `password` and `userRight` steps: tokens the gateway accepts for this app only,
argon2 hashes that never show in traces, rights kept apart per calling workspace and app."""

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.builder.models import App
from apiforge.core.db import session_scope
from apiforge.core.errors import AuthenticationError
from apiforge.datasets.models import UserRight
from apiforge.engine.base import RunContext, StepFailedError
from apiforge.engine.compiler import compile_api
from apiforge.engine.errors import DefinitionError
from apiforge.engine.runtime import Masker, run_api, trace_json
from apiforge.engine.tokens import verify_end_user_token
from apiforge.tools.clock import utcnow
from tests.factories import register

from ._steps_support import SIGNING_SECRET, compile_step, make_context

# --- jwtSign --------------------------------------------------------------------------------


async def _sign(config: dict[str, Any], ctx: RunContext | None = None) -> dict[str, Any]:
    step = compile_step({"id": "sign", "type": "jwtSign", **config})
    out: dict[str, Any] = await step.run(ctx or make_context())
    return out


async def test_jwt_sign_issues_a_token_the_gateway_verifies_for_this_app() -> None:
    ctx = make_context(args={"userId": "u-42", "org": "acme"})
    out = await _sign(
        {
            "sub": {"expr": "args.userId"},
            "expiresIn": 600,
            "rights": ["post:read", "post:write"],
            "claims": {"org": {"expr": "args.org"}, "tier": "gold"},
        },
        ctx,
    )
    claims = verify_end_user_token(SIGNING_SECRET, "app-1", out["token"])
    assert claims["sub"] == "u-42"
    assert claims["aud"] == "app-1"
    assert claims["rights"] == ["post:read", "post:write"]
    assert claims["org"] == "acme"
    assert claims["tier"] == "gold"
    assert "admin" not in claims
    assert (
        claims["exp"] - int(claims["iat"]) == 600
    )  # `iat` to the millisecond, `exp` to the second
    assert out["expiresIn"] == 600
    assert out["expiresTime"].endswith("Z")


async def test_jwt_sign_admin_flag() -> None:
    out = await _sign(
        {"sub": "boss", "admin": {"expr": "args.isAdmin"}}, make_context(args={"isAdmin": True})
    )
    assert verify_end_user_token(SIGNING_SECRET, "app-1", out["token"])["admin"] is True


async def test_jwt_sign_token_of_one_app_is_refused_by_another() -> None:
    out = await _sign({"sub": "u"}, make_context(app_id="app-1"))
    with pytest.raises(AuthenticationError) as caught:
        verify_end_user_token(SIGNING_SECRET, "app-2", out["token"])
    assert caught.value.reason == "invalid_token"


async def test_jwt_sign_token_expires() -> None:
    ctx = make_context(now=utcnow() - timedelta(minutes=10))
    out = await _sign({"sub": "u", "expiresIn": 60}, ctx)
    with pytest.raises(AuthenticationError) as caught:
        verify_end_user_token(SIGNING_SECRET, "app-1", out["token"])
    assert caught.value.reason == "token_expired"


async def test_jwt_sign_tampered_token_is_refused() -> None:
    out = await _sign({"sub": "u", "rights": ["read"]})
    header, payload, signature = out["token"].split(".")
    tampered = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    with pytest.raises(AuthenticationError):
        verify_end_user_token(SIGNING_SECRET, "app-1", tampered)


async def test_jwt_sign_uses_the_apps_own_secret() -> None:
    out = await _sign({"sub": "u"})
    with pytest.raises(AuthenticationError):
        verify_end_user_token("another-apps-secret-" + "z" * 40, "app-1", out["token"])


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({}, "sub"),
        ({"sub": "u", "expiresIn": 0}, "expiresIn"),
        ({"sub": "u", "expiresIn": 10**9}, "expiresIn"),
        ({"sub": "u", "expiresIn": "1h"}, "expiresIn"),
        ({"sub": "u", "claims": {"aud": "other-app"}}, "claims"),
        ({"sub": "u", "claims": {"admin": True, "x": {"expr": "args.x"}}}, "claims"),
        ({"sub": "u", "claims": ["not", "an", "object"]}, "claims"),
        ({"sub": "u", "algorithm": "none"}, "algorithm"),
        ({"sub": ""}, "sub"),
        ({"sub": {"id": 1}}, "sub"),
        ({"sub": "u", "rights": "admin"}, "rights"),
        ({"sub": "u", "rights": [1, 2]}, "rights"),
        ({"sub": "u", "admin": "yes"}, "admin"),
    ],
)
def test_jwt_sign_bad_definitions_are_refused(config: dict[str, Any], field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_step({"id": "sign", "type": "jwtSign", **config})
    assert caught.value.field == f"steps.sign.{field}"


@pytest.mark.parametrize(
    ("config", "args", "field"),
    [
        ({"sub": {"expr": "args.v"}}, {"v": ""}, "sub"),
        ({"sub": {"expr": "args.v"}}, {"v": {"nested": 1}}, "sub"),
        ({"sub": "u", "expiresIn": {"expr": "args.v"}}, {"v": -5}, "expiresIn"),
        ({"sub": "u", "admin": {"expr": "args.v"}}, {"v": "yes"}, "admin"),
        ({"sub": "u", "rights": {"expr": "args.v"}}, {"v": "read"}, "rights"),
        ({"sub": "u", "claims": {"expr": "args.v"}}, {"v": {"sub": "someone-else"}}, "claims"),
        ({"sub": "u", "claims": {"expr": "args.v"}}, {"v": {"big": "x" * 9000}}, "claims"),
    ],
)
async def test_jwt_sign_bad_values_fail_the_call(
    config: dict[str, Any], args: dict[str, Any], field: str
) -> None:
    with pytest.raises(StepFailedError) as caught:
        await _sign(config, make_context(args=args))
    assert caught.value.details == {"stepId": "sign", "field": field}


# --- password -------------------------------------------------------------------------------


async def test_password_hash_and_verify_round_trip() -> None:
    ctx = make_context(args={"pw": "correct horse battery"})
    hashed = await compile_step(
        {"id": "h", "type": "password", "action": "hash", "password": {"expr": "args.pw"}}
    ).run(ctx)
    assert isinstance(hashed, str)
    assert hashed.startswith("$argon2id$")
    assert "correct horse" not in hashed
    ctx.args["stored"] = hashed
    verify = compile_step(
        {
            "id": "v",
            "type": "password",
            "action": "verify",
            "password": {"expr": "args.pw"},
            "hash": {"expr": "args.stored"},
        }
    )
    assert await verify.run(ctx) is True
    ctx.args["pw"] = "wrong horse battery"
    assert await verify.run(ctx) is False


async def test_password_verify_against_no_hash_is_false() -> None:
    ctx = make_context(args={"stored": None})
    verify = compile_step(
        {
            "id": "v",
            "type": "password",
            "action": "verify",
            "password": "anything",
            "hash": {"expr": "args.stored"},
        }
    )
    assert await verify.run(ctx) is False
    ctx.args["stored"] = "not-a-hash"
    assert await verify.run(ctx) is False


@pytest.mark.parametrize("password", ["", 12345, None, "x" * 1025])
async def test_password_must_be_a_reasonable_string(password: Any) -> None:
    step = compile_step(
        {"id": "h", "type": "password", "action": "hash", "password": {"expr": "args.pw"}}
    )
    with pytest.raises(StepFailedError) as caught:
        await step.run(make_context(args={"pw": password}))
    assert caught.value.details["field"] == "password"


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"action": "verify", "password": "p"}, ""),
        ({"action": "hash", "password": "p", "hash": "h"}, ""),
        ({"action": "encrypt", "password": "p"}, "action"),
        ({"action": "hash"}, "password"),
    ],
)
def test_password_bad_definitions_are_refused(config: dict[str, Any], field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_step({"id": "pw", "type": "password", **config})
    assert caught.value.field == ("steps.pw" if not field else f"steps.pw.{field}")


async def test_password_and_hash_never_appear_in_a_debug_trace() -> None:
    compiled = compile_api(
        {
            "api": "signUp",
            "steps": [
                {"id": "h", "type": "password", "action": "hash", "password": {"expr": "args.pw"}},
                {
                    "id": "v",
                    "type": "password",
                    "action": "verify",
                    "password": {"expr": "args.pw"},
                    "hash": {"expr": "steps.h"},
                },
                {"id": "t", "type": "jwtSign", "sub": "u1"},
            ],
            "returnSteps": ["v"],
        },
        {},
        {},
    )
    ctx = make_context(args={"pw": "hunter2-but-longer"})
    ctx.trace = []
    data, trace = await run_api(compiled, ctx)
    assert data == {"v": True}
    assert trace is not None
    shown = json.dumps(trace_json(trace, Masker(compiled.masked_keys, ctx.masked_values)))
    assert "hunter2" not in shown
    assert ctx.steps["h"] not in shown
    assert "$argon2" not in shown
    assert ctx.steps["t"]["token"] not in shown
    entries = {entry["stepId"]: entry for entry in json.loads(shown)}
    assert entries["h"]["input"] == "***"
    assert entries["h"]["output"] == "***"
    assert entries["v"]["output"] == "***"


# --- userRight ------------------------------------------------------------------------------


@dataclass
class Tenancy:
    app: FastAPI
    app_a: str
    app_b: str
    ws_a: str
    ws_b: str


@pytest.fixture
async def tenancy(app: FastAPI, client: AsyncClient) -> Tenancy:
    """Two workspaces (A builds two apps; B is another consumer) with real rows for the keys."""
    builder = await register(client)
    consumer = await register(client)
    async for session in session_scope(app.state.sessionmaker):
        apps = [
            App(workspace_id=builder.workspace_id, name=name, signing_secret="s" * 48, env={})
            for name in ("a", "b")
        ]
        session.add_all(apps)
        await session.flush()
        ids = [item.id for item in apps]
    return Tenancy(app, ids[0], ids[1], builder.workspace_id, consumer.workspace_id)


@pytest.fixture
async def connection(tenancy: Tenancy) -> AsyncIterator[AsyncConnection]:
    async with tenancy.app.state.engine.begin() as conn:
        yield conn


async def _rights(
    conn: AsyncConnection, app_id: str, partition: str, config: dict[str, Any]
) -> Any:
    step = compile_step({"id": "r", "type": "userRight", **config})
    return await step.run(make_context(connection=conn, app_id=app_id, partition=partition))


async def test_grant_check_get_and_revoke(tenancy: Tenancy, connection: AsyncConnection) -> None:
    a, ws = tenancy.app_a, tenancy.ws_a
    key = {"userId": "u1", "target": "org-1"}
    granted = await _rights(connection, a, ws, {"action": "grant", "rights": ["read"], **key})
    assert granted == ["read"]
    granted = await _rights(
        connection, a, ws, {"action": "grant", "rights": ["write", "read", "write"], **key}
    )
    assert granted == ["read", "write"]
    assert await _rights(connection, a, ws, {"action": "get", **key}) == ["read", "write"]
    assert await _rights(
        connection, a, ws, {"action": "check", "rights": ["admin", "write"], **key}
    )
    assert not await _rights(
        connection, a, ws, {"action": "check", "rights": ["admin", "write"], "match": "all", **key}
    )
    assert not await _rights(connection, a, ws, {"action": "check", "rights": ["admin"], **key})
    left = await _rights(connection, a, ws, {"action": "revoke", "rights": ["read"], **key})
    assert left == ["write"]
    # Another target of the same user is its own set.
    other = {"userId": "u1", "target": "org-2"}
    assert await _rights(connection, a, ws, {"action": "get", **other}) == []
    assert await _rights(connection, a, ws, {"action": "revoke", **key}) == []
    count = await connection.scalar(select(UserRight.user_id).where(UserRight.user_id == "u1"))
    assert count is None  # a user left with no rights leaves no row behind


async def test_rights_of_another_workspace_or_app_are_invisible(
    tenancy: Tenancy, connection: AsyncConnection
) -> None:
    key = {"userId": "shared-user", "target": ""}
    await _rights(
        connection, tenancy.app_a, tenancy.ws_a, {"action": "grant", "rights": ["x"], **key}
    )
    # Same app and user id, another calling workspace: nothing to see, nothing to revoke.
    assert await _rights(connection, tenancy.app_a, tenancy.ws_b, {"action": "get", **key}) == []
    assert not await _rights(
        connection, tenancy.app_a, tenancy.ws_b, {"action": "check", "rights": ["x"], **key}
    )
    assert await _rights(connection, tenancy.app_a, tenancy.ws_b, {"action": "revoke", **key}) == []
    # Same workspace, another app.
    assert await _rights(connection, tenancy.app_b, tenancy.ws_a, {"action": "get", **key}) == []
    # Workspace A's grant survived B's revoke.
    assert await _rights(connection, tenancy.app_a, tenancy.ws_a, {"action": "get", **key}) == ["x"]
    granted_b = await _rights(
        connection, tenancy.app_a, tenancy.ws_b, {"action": "grant", "rights": ["y"], **key}
    )
    assert granted_b == ["y"]
    assert await _rights(connection, tenancy.app_a, tenancy.ws_a, {"action": "get", **key}) == ["x"]


async def test_user_ids_and_targets_from_expressions(
    tenancy: Tenancy, connection: AsyncConnection
) -> None:
    step = compile_step(
        {
            "id": "r",
            "type": "userRight",
            "action": "grant",
            "userId": {"expr": "token.sub"},
            "target": {"expr": "args.orgId"},
            "rights": {"expr": "[args.role]"},
        }
    )
    ctx = make_context(
        connection=connection,
        app_id=tenancy.app_a,
        partition=tenancy.ws_a,
        token={"sub": "u9"},
        args={"orgId": "firstOrg", "role": "'; DROP TABLE user_rights; --"},
    )
    assert await step.run(ctx) == ["'; DROP TABLE user_rights; --"]
    row = (await connection.execute(select(UserRight))).one()
    assert (row.user_id, row.target, row.workspace_id) == ("u9", "firstOrg", tenancy.ws_a)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"userId": {"expr": "args.v"}, "action": "grant", "rights": ["r"]}, "userId"),
        (
            {"userId": "u", "target": {"expr": "args.v"}, "action": "grant", "rights": ["r"]},
            "target",
        ),
        ({"userId": "u", "rights": {"expr": "args.v"}, "action": "grant"}, "rights"),
    ],
)
async def test_user_right_bad_values_fail_the_call(
    tenancy: Tenancy, connection: AsyncConnection, config: dict[str, Any], field: str
) -> None:
    step = compile_step({"id": "r", "type": "userRight", **config})
    bad: list[Any] = ["x" * 129, {"a": 1}, [1], True, 1.5]
    if field != "target":
        bad.append("")  # the empty target is the default, not an error
    if field == "rights":
        bad += [["x" * 129], [1], "read", ["r"] * 101]
    for value in bad:
        ctx = make_context(
            connection=connection, app_id=tenancy.app_a, partition=tenancy.ws_a, args={"v": value}
        )
        with pytest.raises(StepFailedError) as caught:
            await step.run(ctx)
        assert caught.value.details["field"] == field, value
    assert (await connection.execute(select(UserRight))).first() is None


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"action": "grant", "userId": "u"}, ""),
        ({"action": "check", "userId": "u"}, ""),
        ({"action": "get", "userId": "u", "rights": ["x"]}, ""),
        ({"action": "grant", "userId": "u", "rights": "read"}, "rights"),
        ({"action": "grant", "userId": "u", "rights": ["x" * 129]}, "rights"),
        ({"action": "promote", "userId": "u"}, "action"),
        ({"action": "get"}, "userId"),
        ({"action": "check", "userId": "u", "rights": ["x"], "match": "most"}, "match"),
    ],
)
def test_user_right_bad_definitions_are_refused(config: dict[str, Any], field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_step({"id": "r", "type": "userRight", **config})
    assert caught.value.field == ("steps.r" if not field else f"steps.r.{field}")


def test_costs_are_the_step_type_prices() -> None:
    prices = {"jwtSign": 2, "password": 5, "userRight": 3}
    assert compile_step({"id": "a", "type": "jwtSign", "sub": "u"}).cost(prices) == 2
    step = compile_step({"id": "b", "type": "password", "action": "hash", "password": "p"})
    assert step.cost(prices) == 5
    step = compile_step({"id": "c", "type": "userRight", "action": "get", "userId": "u"})
    assert step.cost(prices) == 3


async def test_grants_beyond_the_rights_limit_fail_the_step_and_keep_the_row(
    tenancy: Tenancy, connection: AsyncConnection
) -> None:
    key = {"userId": "u1", "target": ""}
    first = [f"r{i}" for i in range(100)]
    assert (
        await _rights(
            connection, tenancy.app_a, tenancy.ws_a, {"action": "grant", "rights": first, **key}
        )
        == first
    )
    step = compile_step(
        {"id": "r", "type": "userRight", "action": "grant", "rights": ["one"], **key}
    )
    ctx = make_context(connection=connection, app_id=tenancy.app_a, partition=tenancy.ws_a)
    with pytest.raises(StepFailedError) as caught:
        await step.run(ctx)
    assert caught.value.reason == "too_many_rights"
    assert caught.value.details["stepId"] == "r"
    assert await _rights(connection, tenancy.app_a, tenancy.ws_a, {"action": "get", **key}) == first
