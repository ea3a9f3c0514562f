"""The permission stage alone: where the end-user token is read, how it is verified and bound to
the partition, and each mode's decision (the `userSystem` lookup runs end to end, in
`tests/e2e/test_gateway_permissions.py`)."""

import asyncio
from datetime import datetime, timedelta
from typing import Any, cast

import jwt
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.builder.signing import SigningSecrets
from apiforge.core.errors import ApiforgeError
from apiforge.engine.compiler import compile_api
from apiforge.engine.loader import AppTarget
from apiforge.engine.secrets import SecretCache
from apiforge.engine.tokens import sign_end_user_token
from apiforge.gateway.context import Caller, GatewayContext
from apiforge.gateway.stages.permissions import PermissionStage, target_of, token_from
from apiforge.tools.clock import utcnow

APP_ID = "app-1"
PARTITION = "ws-consumer"
SECRET = "app-jwt-secret-" + "s" * 40


async def _secret(app_id: str, connection: Any = None) -> SigningSecrets:
    assert app_id == APP_ID
    return SigningSecrets(SECRET)


def _token(
    *,
    sub: str = "user-1",
    rights: list[str] | None = None,
    admin: bool = False,
    workspace: str | None = PARTITION,
    app_id: str = APP_ID,
    secret: str = SECRET,
    expires_in: int = 600,
    claims: dict[str, Any] | None = None,
) -> str:
    return sign_end_user_token(
        secret,
        app_id,
        sub=sub,
        now=utcnow(),
        expires_in=expires_in,
        rights=rights,
        admin=admin,
        claims=claims,
        workspace=workspace,
    )


def _context(
    auth: dict[str, Any],
    headers: dict[str, str] | None = None,
    caller: str = "app_key",
    args: dict[str, Any] | None = None,
) -> GatewayContext:
    ctx = GatewayContext(
        headers={k.lower(): v for k, v in (headers or {}).items()},
        client_ip="127.0.0.1",
        request_id="r",
        raw_body=b"{}",
    )
    ctx.caller = Caller(kind=caller, workspace_id=PARTITION)
    ctx.target = AppTarget(APP_ID, "ws-builder", {}, "1.0.0", False)
    ctx.compiled = compile_api({"api": "probe", "steps": [], "auth": auth}, {}, {})
    ctx.partition = PARTITION
    ctx.args = args or {}
    # The stage hands the call's connection to the secret loader; the fake loader ignores it.
    ctx.connection = cast(AsyncConnection, object())
    return ctx


@pytest.fixture
def stage(app: FastAPI) -> PermissionStage:
    permission_stage = PermissionStage(app.state.gateway_state)
    permission_stage.secrets = SecretCache(_secret, ttl=3600)  # never re-read in a test
    return permission_stage


async def _refused(stage: PermissionStage, ctx: GatewayContext, status: int, reason: str) -> None:
    with pytest.raises(ApiforgeError) as caught:
        await stage.on_request(ctx)
    assert (caught.value.status, caught.value.reason) == (status, reason)
    assert ctx.token is None


NONE = {"requireToken": False, "mode": "none", "rights": [], "target": None}
TOKEN = {"requireToken": True, "mode": "none", "rights": [], "target": None}
SIMPLE = {"requireToken": True, "mode": "simple", "rights": ["post:write", "editor"]}
ADMIN = {"requireToken": True, "mode": "admin", "rights": []}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- where the token comes from -----------------------------------------------------------


def test_key_callers_send_the_token_as_bearer() -> None:
    ctx = _context(NONE, {"Authorization": "Bearer  abc ", "X-End-User-Token": "other"})
    assert token_from(ctx) == "abc"


def test_console_callers_send_the_token_in_its_own_header() -> None:
    headers = {"Authorization": "Bearer console-token", "X-End-User-Token": " abc "}
    assert token_from(_context(NONE, headers, caller="console")) == "abc"
    assert token_from(_context(NONE, {"Authorization": "Bearer x"}, caller="console")) is None


@pytest.mark.parametrize("header", ["", "   "])
def test_an_empty_authorization_is_no_token(header: str) -> None:
    assert token_from(_context(NONE, {"Authorization": header})) is None


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "token abc"])
def test_an_authorization_that_is_not_a_bearer_token_is_refused(header: str) -> None:
    with pytest.raises(ApiforgeError) as caught:
        token_from(_context(NONE, {"Authorization": header}))
    assert (caught.value.status, caught.value.reason) == (401, "invalid_token")


# --- verification -------------------------------------------------------------------------


async def test_no_token_is_fine_when_none_is_required(stage: PermissionStage) -> None:
    ctx = _context(NONE)
    await stage.on_request(ctx)
    assert ctx.token is None


async def test_a_missing_token_is_401_when_required(stage: PermissionStage) -> None:
    await _refused(stage, _context(TOKEN), 401, "token_required")
    await _refused(stage, _context(SIMPLE), 401, "token_required")


async def test_a_valid_token_reaches_the_steps(stage: PermissionStage) -> None:
    ctx = _context(TOKEN, _bearer(_token(claims={"orgId": "o1"})))
    await stage.on_request(ctx)
    assert ctx.token is not None
    assert (ctx.token["sub"], ctx.token["orgId"], ctx.token["ws"]) == ("user-1", "o1", PARTITION)


async def test_a_sent_token_is_verified_even_when_not_required(stage: PermissionStage) -> None:
    await _refused(stage, _context(NONE, _bearer("not.a.token")), 401, "invalid_token")


async def test_an_expired_token_is_refused(stage: PermissionStage) -> None:
    token = sign_end_user_token(
        SECRET,
        APP_ID,
        sub="u",
        now=utcnow() - timedelta(hours=1),
        expires_in=60,
        workspace=PARTITION,
    )
    await _refused(stage, _context(TOKEN, _bearer(token)), 401, "token_expired")


async def test_a_tampered_token_is_refused(stage: PermissionStage) -> None:
    header, payload, signature = _token().split(".")
    forged_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b"user-1", b"user-2")
    ).decode()
    forged = f"{header}.{forged_payload}.{signature}"
    await _refused(stage, _context(TOKEN, _bearer(forged)), 401, "invalid_token")


async def test_an_unsigned_alg_none_token_is_refused(stage: PermissionStage) -> None:
    claims = jwt.decode(_token(admin=True), options={"verify_signature": False})
    unsigned = jwt.encode(claims, None, algorithm="none")  # type: ignore[arg-type]
    await _refused(stage, _context(ADMIN, _bearer(unsigned)), 401, "invalid_token")


async def test_another_apps_token_is_refused(stage: PermissionStage) -> None:
    token = _token(app_id="app-2", secret="app-2-secret-" + "t" * 40)
    await _refused(stage, _context(TOKEN, _bearer(token)), 401, "invalid_token")
    # Even signed with this app's secret, another audience is refused.
    await _refused(stage, _context(TOKEN, _bearer(_token(app_id="app-2"))), 401, "invalid_token")


async def test_a_token_of_another_workspace_is_refused(stage: PermissionStage) -> None:
    token = _token(workspace="ws-someone-else", rights=["editor"])
    await _refused(stage, _context(SIMPLE, _bearer(token)), 401, "token_workspace_mismatch")


async def test_a_token_without_a_workspace_is_refused(stage: PermissionStage) -> None:
    await _refused(
        stage, _context(TOKEN, _bearer(_token(workspace=None))), 401, ("token_workspace_mismatch")
    )


async def test_the_secrets_are_read_once_per_app_until_forgotten() -> None:
    loads: list[str] = []

    async def load(app_id: str, connection: Any) -> SigningSecrets:
        loads.append(app_id)
        return SigningSecrets(f"secret-of-{app_id}")

    cache = SecretCache(load, ttl=3600)
    connection = cast(AsyncConnection, None)  # the fake loader never touches it
    assert (await cache.get("a", connection)).current == "secret-of-a"
    assert (await cache.get("a", connection)).current == "secret-of-a"
    await cache.get("b", connection)
    cache.forget("a")  # rotated through this process: read again at once
    await cache.get("a", connection)
    await cache.get("b", connection)
    assert loads == ["a", "b", "a"]


async def test_the_secrets_are_read_again_once_their_ttl_is_over() -> None:
    """Another node's rotation reaches this one within the TTL: entries are not kept forever."""
    secrets = iter(["first", "second"])

    async def load(app_id: str, connection: Any) -> SigningSecrets:
        return SigningSecrets(next(secrets))

    cache = SecretCache(load, ttl=0)  # every entry already over its TTL
    connection = cast(AsyncConnection, None)
    assert (await cache.get("a", connection)).current == "first"
    assert (await cache.get("a", connection)).current == "second"


# --- rotation -------------------------------------------------------------------------------

NEW_SECRET = "app-jwt-rotated-" + "n" * 40


def _rotated(stage: PermissionStage, until: datetime) -> None:
    """The app rotated from `SECRET` to `NEW_SECRET`, `SECRET` accepted until `until`."""

    async def load(app_id: str, connection: Any) -> SigningSecrets:
        return SigningSecrets(NEW_SECRET, SECRET, until)

    stage.secrets = SecretCache(load, ttl=3600)


def _clock_at(monkeypatch: pytest.MonkeyPatch, now: datetime) -> None:
    monkeypatch.setattr("apiforge.gateway.stages.permissions.utcnow", lambda: now)


async def test_the_previous_secret_is_accepted_until_its_grace_ends(
    stage: PermissionStage, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = _token()  # signed with SECRET, before the rotation
    await stage.on_request(_context(TOKEN, _bearer(old)))  # remembered under SECRET
    until = utcnow() + timedelta(minutes=5)
    _rotated(stage, until)
    _clock_at(monkeypatch, until - timedelta(seconds=1))
    ctx = _context(TOKEN, _bearer(old))
    await stage.on_request(ctx)
    assert ctx.token is not None
    assert ctx.token["sub"] == "user-1"
    new = _token(secret=NEW_SECRET)
    await stage.on_request(_context(TOKEN, _bearer(new)))
    # The grace over: the token remembered under the previous secret is refused all the same.
    _clock_at(monkeypatch, until)
    await _refused(stage, _context(TOKEN, _bearer(old)), 401, "invalid_token")
    await stage.on_request(_context(TOKEN, _bearer(new)))


async def test_a_token_of_the_previous_secret_is_refused_for_its_own_faults(
    stage: PermissionStage,
) -> None:
    """Signed with the previous secret during its grace but expired: `token_expired`, as it
    would be under the current secret, not a misleading `invalid_token`."""
    _rotated(stage, utcnow() + timedelta(minutes=5))
    expired = sign_end_user_token(
        SECRET,
        APP_ID,
        sub="u",
        now=utcnow() - timedelta(hours=1),
        expires_in=60,
        workspace=PARTITION,
    )
    await _refused(stage, _context(TOKEN, _bearer(expired)), 401, "token_expired")
    await _refused(
        stage, _context(TOKEN, _bearer(_token(secret="guessed-" + "g" * 40))), 401, "invalid_token"
    )


async def test_without_a_grace_only_the_current_secret_is_accepted(
    stage: PermissionStage,
) -> None:
    old = _token()
    await stage.on_request(_context(TOKEN, _bearer(old)))  # remembered under SECRET

    async def load(app_id: str, connection: Any) -> SigningSecrets:
        return SigningSecrets(NEW_SECRET)

    stage.secrets = SecretCache(load, ttl=3600)
    await _refused(stage, _context(TOKEN, _bearer(old)), 401, "invalid_token")
    await stage.on_request(_context(TOKEN, _bearer(_token(secret=NEW_SECRET))))


async def test_a_token_signed_after_another_nodes_rotation_is_accepted_at_once(
    stage: PermissionStage,
) -> None:
    """Another node rotated the secret and its `jwtSign` signed a user in with the new one: this
    node, holding the secrets from before (cached for their TTL), read them again instead of
    refusing the fresh token until its entry expired."""
    stored = [SigningSecrets(SECRET)]
    loads: list[str] = []

    async def load(app_id: str, connection: Any) -> SigningSecrets:
        loads.append(app_id)
        return stored[0]

    stage.secrets = SecretCache(load, ttl=3600)
    await stage.on_request(_context(TOKEN, _bearer(_token())))  # SECRET, cached
    stored[0] = SigningSecrets(NEW_SECRET, SECRET, utcnow() + timedelta(minutes=5))
    await asyncio.sleep(0.15)  # the entry older than `SECRET_RECHECK` (0.1 s)
    ctx = _context(TOKEN, _bearer(_token(secret=NEW_SECRET, sub="signed-in-elsewhere")))
    await stage.on_request(ctx)
    assert ctx.token is not None
    assert ctx.token["sub"] == "signed-in-elsewhere"
    await stage.on_request(_context(TOKEN, _bearer(_token())))  # the grace of the one before
    assert loads == [APP_ID, APP_ID]


async def test_made_up_tokens_read_the_secrets_again_at_most_once_a_recheck(
    stage: PermissionStage,
) -> None:
    loads: list[str] = []

    async def load(app_id: str, connection: Any) -> SigningSecrets:
        loads.append(app_id)
        return SigningSecrets(SECRET)

    made_up = _bearer(_token(secret="guessed-" + "g" * 40))
    stage.secrets = SecretCache(load, ttl=3600, recheck=3600)
    for _ in range(3):  # the first is a miss: read once, inline, and that read is fresh
        await _refused(stage, _context(TOKEN, made_up), 401, "invalid_token")
    assert loads == [APP_ID]
    stage.secrets = SecretCache(load, ttl=3600, recheck=0)
    for _ in range(3):  # the miss, then a re-read each: the same secrets, refused all the same
        await _refused(stage, _context(TOKEN, made_up), 401, "invalid_token")
    assert loads == [APP_ID] * 5


# --- modes --------------------------------------------------------------------------------


@pytest.mark.parametrize("rights", [["editor"], ["post:write"], ["x", "editor", "y"]])
async def test_simple_allows_any_one_of_the_rights(
    stage: PermissionStage, rights: list[str]
) -> None:
    ctx = _context(SIMPLE, _bearer(_token(rights=rights)))
    await stage.on_request(ctx)
    assert ctx.token is not None


@pytest.mark.parametrize("rights", [[], ["viewer"], ["Editor"], ["post:write "], ["post"]])
async def test_simple_refuses_tokens_without_a_matching_right(
    stage: PermissionStage, rights: list[str]
) -> None:
    await _refused(
        stage, _context(SIMPLE, _bearer(_token(rights=rights))), 403, ("insufficient_rights")
    )


async def test_simple_ignores_an_admin_flag(stage: PermissionStage) -> None:
    token = _token(admin=True, rights=[])
    await _refused(stage, _context(SIMPLE, _bearer(token)), 403, "insufficient_rights")


async def test_admin_allows_admin_tokens_only(stage: PermissionStage) -> None:
    ctx = _context(ADMIN, _bearer(_token(admin=True)))
    await stage.on_request(ctx)
    assert ctx.token is not None
    assert ctx.token["admin"] is True
    user = _bearer(_token(rights=["admin", "editor"]))
    await _refused(stage, _context(ADMIN, user), 403, "admin_required")


async def test_admin_cannot_be_claimed_through_custom_claims() -> None:
    with pytest.raises(ValueError, match="admin"):
        _token(claims={"admin": True})
    with pytest.raises(ValueError, match="ws"):
        _token(claims={"ws": "another"})


async def test_an_unknown_mode_is_refused_not_allowed(stage: PermissionStage) -> None:
    auth = {"requireToken": True, "mode": "superuser", "rights": ["r"]}
    await _refused(
        stage, _context(auth, _bearer(_token(rights=["r"]))), 403, ("permission_mode_unknown")
    )


# --- the userSystem target ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "args", "claims", "expected"),
    [
        ({"source": "arg", "value": "orgId"}, {"orgId": "firstOrg"}, {}, "firstOrg"),
        ({"source": "arg", "value": "orgId"}, {"orgId": 42}, {}, "42"),
        ({"source": "arg", "value": "orgId"}, {"orgId": ""}, {}, ""),
        ({"source": "token", "value": "org"}, {"org": "x"}, {"org": "from-token"}, "from-token"),
        ({"source": "constant", "value": "global"}, {"global": "no"}, {}, "global"),
    ],
)
def test_the_target_comes_from_an_arg_a_claim_or_a_constant(
    spec: dict[str, str], args: dict[str, Any], claims: dict[str, Any], expected: str
) -> None:
    assert target_of(spec, args, claims) == expected


@pytest.mark.parametrize(
    ("spec", "args", "claims"),
    [
        ({"source": "arg", "value": "orgId"}, {}, {}),
        ({"source": "arg", "value": "orgId"}, {"orgId": None}, {}),
        ({"source": "arg", "value": "orgId"}, {"orgId": True}, {}),
        ({"source": "arg", "value": "orgId"}, {"orgId": ["a"]}, {}),
        ({"source": "arg", "value": "orgId"}, {"orgId": {"$ne": ""}}, {}),
        ({"source": "token", "value": "org"}, {"org": "arg-not-claim"}, {}),
        ({"source": "elsewhere", "value": "x"}, {"x": "y"}, {}),
    ],
)
def test_a_missing_or_odd_target_is_403(
    spec: dict[str, str], args: dict[str, Any], claims: dict[str, Any]
) -> None:
    with pytest.raises(ApiforgeError) as caught:
        target_of(spec, args, claims)
    assert (caught.value.status, caught.value.reason) == (403, "permission_target_missing")
