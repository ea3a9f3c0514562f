"""`jwtRevoke` end to end: an app's sign-out revokes one user's tokens in one partition, at once on
this process (remembered tokens included) and within the secrets' TTL on another; a token signed
after it (the same call's, a later sign-in) works; a failed call or a bad `sub` revokes nothing;
other users, other partitions and other apps are untouched. `jwtSign` takes a `sub` exactly when
`jwtRevoke` does (no NUL; other control characters alike)."""

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.builder.models import EndUserTokenRevocation
from apiforge.builder.signing import SigningSecrets, read_signing_secrets
from apiforge.core.errors import ApiforgeError
from apiforge.engine.compiler import compile_api
from apiforge.engine.loader import AppTarget
from apiforge.engine.revocations import RevocationCache
from apiforge.engine.secrets import SecretCache
from apiforge.engine.tokens import sign_end_user_token
from apiforge.gateway.context import Caller, GatewayContext
from apiforge.gateway.stages.permissions import PermissionStage
from apiforge.tools.clock import utcnow
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import PRICE
from tests.e2e._perms import Consumer, consumer
from tests.e2e._workspaces import INJECTION, assert_error, data_of
from tests.factories import User, register

USER = [{"name": "user", "type": "string", "required": True, "max": 128}]
BODY = [{"name": "body", "type": "object", "required": True}]
TOKEN = {"requireToken": True, "mode": "none", "rights": []}
OPEN = {"requireToken": False, "mode": "none", "rights": []}
SIGN = {"id": "session", "type": "jwtSign", "sub": {"expr": "args.user"}, "expiresIn": 600}
# api -> (params, steps, auth)
APIS: dict[str, tuple[list[Any], list[Any], dict[str, Any]]] = {
    "signIn": (USER, [SIGN], OPEN),
    "signOut": ([], [{"id": "out", "type": "jwtRevoke", "sub": {"expr": "token.sub"}}], TOKEN),
    "me": ([], [{"id": "me", "type": "set", "value": {"expr": "token.sub"}}], TOKEN),
    "changePassword": (
        [],
        [
            {"id": "out", "type": "jwtRevoke", "sub": {"expr": "token.sub"}},
            {**SIGN, "sub": {"expr": "token.sub"}},
        ],
        TOKEN,
    ),
    "revoke": (BODY, [{"id": "out", "type": "jwtRevoke", "sub": {"expr": "args.body.sub"}}], OPEN),
    "revokeThenFail": (
        USER,
        [
            {"id": "out", "type": "jwtRevoke", "sub": {"expr": "args.user"}},
            {"id": "no", "type": "assert", "condition": False, "status": 409, "error": "nope"},
        ],
        OPEN,
    ),
}
# Later than a revocation by the clock, yet within its millisecond, a sign-in of another call
# is revoked with it (the revocation is rounded up, `iat` down): these tests sign in later.
PAST_THE_MILLISECOND = 0.002


async def revoke_app(client: AsyncClient, owner: User, name: str = "Revoke") -> str:
    app_id = await new_app(client, owner.headers, name, visibility="public")
    for api, (params, steps, auth) in APIS.items():
        await new_api(
            client, owner.headers, app_id, api, params=params, steps=steps, auth=auth, price=PRICE
        )
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
    )
    data_of(published)
    return app_id


async def _rows(app: FastAPI, app_id: str) -> dict[tuple[str, str], Any]:
    table = EndUserTokenRevocation
    async with app.state.engine.connect() as conn:
        rows = await conn.execute(
            select(table.workspace_id, table.sub, table.revoked_at).where(table.app_id == app_id)
        )
        return {(row.workspace_id, row.sub): row.revoked_at for row in rows}


async def _sign_out(who: Consumer, token: str) -> dict[str, Any]:
    out: dict[str, Any] = data_of(await who.call("signOut", token))["out"]
    await asyncio.sleep(PAST_THE_MILLISECOND)
    return out


async def test_sign_out_revokes_that_users_tokens_in_that_partition_only(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await revoke_app(client, owner)
    a, b = await consumer(client, app_id), await consumer(client, app_id)
    alice, alice_too, bob = (
        await a.sign_in("alice"),
        await a.sign_in("alice"),
        await a.sign_in("bob"),
    )
    alice_elsewhere = await b.sign_in("alice")  # the same id in another consumer's partition
    for token in (alice, alice_too, alice_elsewhere):
        assert data_of(await (b if token == alice_elsewhere else a).call("me", token))
    # Another app's revocation of an "alice" of its own touches none of this app's.
    other_app = await revoke_app(client, owner, "Other")
    c = await consumer(client, other_app)
    data_of(await c.call("revoke", body={"sub": "alice"}))

    out = await _sign_out(a, alice)
    assert out["sub"] == "alice"
    assert out["revokedTime"].endswith("Z")
    for token in (alice, alice_too):  # both remembered by the gateway: refused all the same
        for _ in range(2):
            refused = assert_error(await a.call("me", token), 401, "token_revoked")
            assert refused == {"error": "token_revoked"}
    assert (await a.call("me", alice)).json()["message"] == "This token was revoked"
    assert data_of(await a.call("me", bob)) == {"me": "bob"}
    assert data_of(await b.call("me", alice_elsewhere)) == {"me": "alice"}
    fresh = await a.sign_in("alice")
    assert data_of(await a.call("me", fresh)) == {"me": "alice"}
    assert set(await _rows(app, app_id)) == {(a.user.workspace_id, "alice")}


async def test_a_token_signed_in_the_call_that_revoked_works(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await revoke_app(client, owner)
    a = await consumer(client, app_id)
    old = await a.sign_in("alice")
    assert data_of(await a.call("me", old)) == {"me": "alice"}
    changed = data_of(await a.call("changePassword", old))
    new = changed["session"]["token"]
    assert_error(await a.call("me", old), 401, "token_revoked")
    assert data_of(await a.call("me", new)) == {"me": "alice"}
    # Issued at the revocation, to the millisecond: not before it.
    (revoked_at,) = (await _rows(app, app_id)).values()
    iat = jwt.decode(new, options={"verify_signature": False})["iat"]
    assert round(iat * 1000) == round(revoked_at.timestamp() * 1000)
    # Changing it again revokes that one too, and keeps the later time.
    newer = data_of(await a.call("changePassword", new))["session"]["token"]
    assert_error(await a.call("me", new), 401, "token_revoked")
    assert data_of(await a.call("me", newer)) == {"me": "alice"}
    (later,) = (await _rows(app, app_id)).values()
    assert later > revoked_at


async def test_a_failed_call_revokes_nothing(app: FastAPI, client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await revoke_app(client, owner)
    a = await consumer(client, app_id)
    alice = await a.sign_in("alice")
    assert data_of(await a.call("me", alice))
    assert_error(await a.call("revokeThenFail", user="alice"), 409, "nope")
    assert await _rows(app, app_id) == {}
    assert data_of(await a.call("me", alice)) == {"me": "alice"}


@pytest.mark.parametrize(
    "sub", ["", "x" * 129, 4.5, None, True, {"id": "alice"}, ["alice"], "ali\x00ce"]
)
async def test_a_bad_sub_is_refused_and_revokes_nothing(
    app: FastAPI, client: AsyncClient, sub: Any
) -> None:
    owner = await register(client)
    app_id = await revoke_app(client, owner)
    a = await consumer(client, app_id)
    alice = await a.sign_in("alice")
    refused = assert_error(await a.call("revoke", body={"sub": sub}), 400, "step_failed")
    assert (refused["stepId"], refused["field"]) == ("out", "sub")
    assert await _rows(app, app_id) == {}
    assert data_of(await a.call("me", alice)) == {"me": "alice"}


async def test_a_sub_is_taken_as_jwt_sign_takes_it(app: FastAPI, client: AsyncClient) -> None:
    """A string is the user id as it is, SQL-looking or not; a whole number its digits (as
    `jwtSign` signs it)."""
    owner = await register(client)
    app_id = await revoke_app(client, owner)
    a = await consumer(client, app_id)
    alice, numbered, odd = (
        await a.sign_in("alice"),
        await a.sign_in("42"),
        await a.sign_in(INJECTION),
    )
    assert data_of(await a.call("revoke", body={"sub": INJECTION}))["out"]["sub"] == INJECTION
    assert data_of(await a.call("revoke", body={"sub": 42}))["out"]["sub"] == "42"
    assert_error(await a.call("me", odd), 401, "token_revoked")
    assert_error(await a.call("me", numbered), 401, "token_revoked")
    assert data_of(await a.call("me", alice)) == {"me": "alice"}
    assert set(await _rows(app, app_id)) == {
        (a.user.workspace_id, INJECTION),
        (a.user.workspace_id, "42"),
    }


# --- another process ----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _other_process(app: FastAPI, clock: FakeClock) -> PermissionStage:
    """The permission stage of another server process: caches of its own, on a fake clock."""
    settings = app.state.settings

    async def load(app_id: str, connection: AsyncConnection) -> SigningSecrets:
        secrets = await read_signing_secrets(settings, connection, app_id)
        assert secrets is not None
        return secrets

    stage = PermissionStage(app.state.gateway_state)
    stage.secrets = SecretCache(load, clock=clock)
    stage.revocations = RevocationCache(clock=clock)
    return stage


async def _check(
    app: FastAPI, stage: PermissionStage, who: Consumer, owner: User, token: str
) -> str | None:
    """Its check of `token` in a call of `who`: None when accepted, else the refusal's reason."""
    ctx = GatewayContext(
        headers={"authorization": f"Bearer {token}"},
        client_ip="127.0.0.1",
        request_id="r",
        raw_body=b"{}",
    )
    ctx.caller = Caller(kind="app_key", workspace_id=who.user.workspace_id)
    ctx.target = AppTarget(who.app_id, owner.workspace_id, {}, "0.1.0", False)
    ctx.compiled = compile_api({"api": "me", "steps": [], "auth": TOKEN}, {}, {})
    ctx.partition = who.user.workspace_id
    async with app.state.engine.connect() as connection:  # a call's: a snapshot of now
        ctx.connection = connection
        try:
            await stage.on_request(ctx)
        except ApiforgeError as exc:
            return exc.reason
    return None


async def test_another_process_refuses_a_revoked_token_within_the_ttl(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await revoke_app(client, owner)
    a = await consumer(client, app_id)
    clock = FakeClock()
    other = _other_process(app, clock)
    check: Callable[[str], Awaitable[str | None]] = lambda token: _check(  # noqa: E731
        app, other, a, owner, token
    )
    alice, bob = await a.sign_in("alice"), await a.sign_in("bob")
    assert await check(alice) is None  # the app's secrets cached: never revoked
    await _sign_out(a, bob)
    assert_error(await a.call("me", bob), 401, "token_revoked")  # this process: at once
    assert await check(bob) is None  # the other: not yet (its cached secrets)
    clock.now += 1.0  # SECRET_TTL
    assert await check(bob) == "token_revoked"
    assert await check(alice) is None  # older than the app's latest: alice's looked up, none
    await _sign_out(a, alice)
    assert await check(alice) is None  # its cached answers: the app's and alice's
    clock.now += 1.0
    assert await check(alice) == "token_revoked"
    late = await a.sign_in("alice")
    assert await check(late) is None  # issued after the app's latest revocation: no look-up


async def test_revoking_again_keeps_one_row_with_the_later_time(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await revoke_app(client, owner)
    a = await consumer(client, app_id)
    times = []
    for _ in range(3):
        data_of(await a.call("revoke", body={"sub": "alice"}))
        (revoked_at,) = (await _rows(app, app_id)).values()
        times.append(revoked_at)
        await asyncio.sleep(PAST_THE_MILLISECOND)
    assert times == sorted(times)
    assert len(set(times)) == 3


# --- one `sub` rule for jwtSign and jwtRevoke ---------------------------------------------


async def test_jwt_sign_refuses_a_sub_jwt_revoke_refuses(app: FastAPI, client: AsyncClient) -> None:
    """A NUL: `jwtRevoke` cannot store it (PostgreSQL), so a token for it could never be
    revoked. Both steps refuse it with the same 400, and nothing is signed or stored."""
    owner = await register(client)
    app_id = await revoke_app(client, owner)
    a = await consumer(client, app_id)
    for api, step, args in (
        ("signIn", "session", {"user": "ali\x00ce"}),
        ("revoke", "out", {"body": {"sub": "ali\x00ce"}}),
    ):
        response = await a.call(api, **args)
        refused = assert_error(response, 400, "step_failed")
        assert (refused["stepId"], refused["field"]) == (step, "sub")
        assert response.json()["message"] == "sub cannot contain the NUL character"
    assert await _rows(app, app_id) == {}


@pytest.mark.parametrize("sub", ["a\tb", "a\nb", "a\rb", "\x01", "a\x1fb", "a\x7fb", "a\u2028b"])
async def test_other_control_characters_are_signed_and_revoked_alike(
    app: FastAPI, client: AsyncClient, sub: str
) -> None:
    owner = await register(client)
    app_id = await revoke_app(client, owner)
    a = await consumer(client, app_id)
    token, alice = await a.sign_in(sub), await a.sign_in("alice")
    assert data_of(await a.call("me", token)) == {"me": sub}
    assert data_of(await a.call("revoke", body={"sub": sub}))["out"]["sub"] == sub
    assert_error(await a.call("me", token), 401, "token_revoked")
    assert data_of(await a.call("me", alice)) == {"me": "alice"}
    assert set(await _rows(app, app_id)) == {(a.user.workspace_id, sub)}


async def test_a_token_an_earlier_version_signed_for_a_nul_sub_is_answered(
    app: FastAPI, client: AsyncClient
) -> None:
    """Such tokens were signed until `jwtSign` refused NUL; older than the app's latest
    revocation, the gateway looks their user up: never revoked (no row can hold it), not a 500
    (PostgreSQL refuses a NUL as a query parameter)."""
    owner = await register(client)
    app_id = await revoke_app(client, owner)
    a = await consumer(client, app_id)
    async with app.state.engine.connect() as conn:
        secrets = await read_signing_secrets(app.state.settings, conn, app_id)
    assert secrets is not None
    earlier = sign_end_user_token(
        secrets.current,
        app_id,
        sub="ali\x00ce",
        now=utcnow() - timedelta(seconds=1),
        expires_in=600,
        workspace=a.user.workspace_id,
    )
    data_of(await a.call("revoke", body={"sub": "bob"}))  # the app's latest: after the token
    for _ in range(2):  # looked up, then from the cache
        assert data_of(await a.call("me", earlier)) == {"me": "ali\x00ce"}
