"""End-user tokens and the permission modes over HTTP: `none`, `simple`, `admin`, `userSystem`,
each allowed and denied, for key callers (token in `Authorization`) and console callers (token in
`X-End-User-Token`); forged tokens and tokens of another app or another workspace are 401, every
denial is a 403 with a reason, and a refused call changes nothing.
"""

from datetime import timedelta

import jwt
from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.engine.tokens import sign_end_user_token
from apiforge.tools.clock import utcnow
from tests.e2e._apps import signing_secret
from tests.e2e._perms import Consumer, consumer, grant, perms_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register


async def _setup(client: AsyncClient) -> tuple[User, str, Consumer]:
    owner = await register(client)
    app_id = await perms_app(client, owner)
    return owner, app_id, await consumer(client, app_id)


# --- none and requireToken ------------------------------------------------------------------


async def test_an_open_api_needs_no_token_and_sees_one_when_sent(client: AsyncClient) -> None:
    _, _, b = await _setup(client)
    assert data_of(await b.call("open")) == {"me": "anonymous"}
    token = await b.sign_in("alice")
    assert data_of(await b.call("open", token)) == {"me": "alice"}
    # A token that is sent is verified even where none is required.
    assert_error(await b.call("open", "not-a-token"), 401, "invalid_token")


async def test_require_token_refuses_missing_and_forged_tokens(
    client: AsyncClient, app: FastAPI
) -> None:
    _, app_id, b = await _setup(client)
    token = await b.sign_in("alice")
    assert data_of(await b.call("whoAmI", token)) == {"me": "alice"}

    assert_error(await b.call("whoAmI"), 401, "token_required")
    assert_error(await b.call("whoAmI", "garbage"), 401, "invalid_token")

    secret = await signing_secret(app, app_id)
    expired = sign_end_user_token(
        secret,
        app_id,
        sub="alice",
        now=utcnow() - timedelta(hours=1),
        expires_in=60,
        workspace=b.user.workspace_id,
    )
    assert_error(await b.call("whoAmI", expired), 401, "token_expired")

    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"alice"', b'"mallory"')
    ).decode()
    assert_error(await b.call("whoAmI", f"{header}.{forged}.{signature}"), 401, "invalid_token")

    unsigned = jwt.encode({**claims, "sub": "mallory"}, None, algorithm="none")  # type: ignore[arg-type]
    assert_error(await b.call("whoAmI", unsigned), 401, "invalid_token")

    wrong_key = jwt.encode({**claims, "sub": "mallory"}, "guessed-" + "g" * 40, algorithm="HS256")
    assert_error(await b.call("whoAmI", wrong_key), 401, "invalid_token")


async def test_another_apps_token_is_refused(client: AsyncClient) -> None:
    owner, _, b = await _setup(client)
    other_app = await perms_app(client, owner, name="Other")
    other = await consumer(client, other_app)
    # Same user id, same rights, but issued by another app (another secret and audience).
    foreign = await other.sign_in("alice", rights=["editor"], admin=True)
    assert_error(await b.call("whoAmI", foreign), 401, "invalid_token")
    assert_error(await b.call("addNote", foreign, text="x"), 401, "invalid_token")
    assert await b.notes() == []


async def test_a_token_goes_in_authorization_only_for_key_callers(client: AsyncClient) -> None:
    _, _, b = await _setup(client)
    token = await b.sign_in("alice")
    response = await b.client.post(
        "/api/v1/invocations",
        json={"appId": b.app_id, "api": "whoAmI", "args": {}},
        headers={"X-Api-Key": b.secret, "X-End-User-Token": token},
    )
    assert_error(response, 401, "token_required")
    basic = {"X-Api-Key": b.secret, "Authorization": "Basic YWxpY2U6cHc="}
    response = await b.client.post(
        "/api/v1/invocations", json={"appId": b.app_id, "api": "open"}, headers=basic
    )
    assert_error(response, 401, "invalid_token")


async def test_console_callers_send_the_token_in_x_end_user_token(client: AsyncClient) -> None:
    owner, app_id, _ = await _setup(client)

    async def dev(api: str, token: str | None = None, **args: object) -> Response:
        headers = dict(owner.headers)
        if token is not None:
            headers["X-End-User-Token"] = token
        body = {"appId": app_id, "api": api, "version": "dev", "args": args}
        return await client.post("/api/v1/invocations", json=body, headers=headers)

    signed_in = await dev("signIn", user="builder-user", rights=["editor"])
    token = data_of(signed_in)["session"]["token"]
    assert data_of(await dev("whoAmI", token)) == {"me": "builder-user"}
    assert_error(await dev("whoAmI"), 401, "token_required")
    assert_error(await dev("addNote", "x.y.z", text="t"), 401, "invalid_token")
    assert data_of(await dev("addNote", token, text="by the builder"))["note"]["author"] == (
        "builder-user"
    )


# --- simple ---------------------------------------------------------------------------------


async def test_simple_allows_any_one_of_the_apis_rights(client: AsyncClient) -> None:
    _, _, b = await _setup(client)
    for index, rights in enumerate([["editor"], ["notes:write"], ["a", "editor", "b"]]):
        token = await b.sign_in(f"user{index}", rights=rights)
        note = data_of(await b.call("addNote", token, text=f"note {index}"))["note"]
        assert note["author"] == f"user{index}"
    assert len(await b.notes()) == 3


async def test_simple_refuses_other_rights_and_writes_nothing(client: AsyncClient) -> None:
    _, _, b = await _setup(client)
    for rights in [[], ["reader"], ["Editor"], ["notes"]]:
        token = await b.sign_in("bob", rights=rights)
        response = await b.call("addNote", token, text="'; DROP TABLE records; --")
        data = assert_error(response, 403, "insufficient_rights")
        assert response.json()["message"] == "The token holds none of the rights this API requires"
        assert set(data) == {"error"}
    admin_without_rights = await b.sign_in("root", admin=True)
    assert_error(
        await b.call("addNote", admin_without_rights, text="x"), 403, ("insufficient_rights")
    )
    assert_error(await b.call("addNote", text="x"), 401, "token_required")
    assert await b.notes() == []


# --- admin ----------------------------------------------------------------------------------


async def test_admin_accepts_admin_tokens_and_call_api_steps_only(client: AsyncClient) -> None:
    _, _, b = await _setup(client)
    admin = await b.sign_in("root", admin=True)
    assert data_of(await b.call("manage", admin)) == {"done": "admin ok"}

    user = await b.sign_in("bob", rights=["admin", "editor"])
    assert_error(await b.call("manage", user), 403, "admin_required")
    assert_error(await b.call("manage"), 401, "token_required")

    # Another API of the app may call it with a `callApi` step, token or not.
    assert data_of(await b.call("viaCall")) == {"inner": {"done": "admin ok"}}
    assert data_of(await b.call("viaCall", user)) == {"inner": {"done": "admin ok"}}


# --- userSystem -----------------------------------------------------------------------------


async def test_user_system_reads_the_target_from_an_arg(client: AsyncClient) -> None:
    _, app_id, b = await _setup(client)
    data_of(await grant(client, b.user.headers, app_id, "alice", "firstOrg", ["read"]))
    data_of(await grant(client, b.user.headers, app_id, "carol", "firstOrg", ["owner", "x"]))
    alice = await b.sign_in("alice")
    carol = await b.sign_in("carol")
    dave = await b.sign_in("dave", rights=["read", "owner"])  # token rights do not count here

    assert data_of(await b.call("orgRead", alice, orgId="firstOrg")) == {"org": "firstOrg"}
    assert data_of(await b.call("orgRead", carol, orgId="firstOrg")) == {"org": "firstOrg"}
    assert_error(await b.call("orgRead", alice, orgId="secondOrg"), 403, "insufficient_rights")
    assert_error(await b.call("orgRead", dave, orgId="firstOrg"), 403, "insufficient_rights")
    assert_error(await b.call("orgRead", alice), 403, "permission_target_missing")
    assert_error(await b.call("orgRead", orgId="firstOrg"), 401, "token_required")
    injected = "firstOrg' OR '1'='1"
    assert_error(await b.call("orgRead", alice, orgId=injected), 403, "insufficient_rights")

    # A revoke applies to the very next call (no cache between the rows and the gateway).
    revoke = f"/api/v1/apps/{app_id}/user-rights?userId=alice&target=firstOrg"
    data_of(await client.delete(revoke, headers=b.user.headers))
    assert_error(await b.call("orgRead", alice, orgId="firstOrg"), 403, "insufficient_rights")


async def test_user_system_reads_the_target_from_the_token_or_a_constant(
    client: AsyncClient,
) -> None:
    _, app_id, b = await _setup(client)
    data_of(await grant(client, b.user.headers, app_id, "alice", "acme", ["read"]))
    data_of(await grant(client, b.user.headers, app_id, "alice", "global", ["read"]))
    in_acme = await b.sign_in("alice", org="acme")
    in_other = await b.sign_in("alice", org="other")
    bob = await b.sign_in("bob", org="acme")

    assert data_of(await b.call("orgByToken", in_acme)) == {"org": "acme"}
    assert_error(await b.call("orgByToken", in_other), 403, "insufficient_rights")
    assert_error(await b.call("orgByToken", bob), 403, "insufficient_rights")

    assert data_of(await b.call("orgGlobal", in_other)) == {"ok": True}
    assert_error(await b.call("orgGlobal", bob), 403, "insufficient_rights")


async def test_rights_granted_by_the_user_right_step_count_too(client: AsyncClient) -> None:
    owner, app_id, b = await _setup(client)
    granting = {
        "id": "granted",
        "type": "userRight",
        "action": "grant",
        "userId": {"expr": "token.sub"},
        "target": "global",
        "rights": ["read"],
    }
    await client.post(
        f"/api/v1/apps/{app_id}/apis",
        json={
            "api": "joinGlobal",
            "steps": [granting],
            "auth": {"requireToken": True, "mode": "none"},
            "price": 100,
        },
        headers=owner.headers,
    )
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "patch"}, headers=owner.headers
    )
    data_of(published)
    alice = await b.sign_in("alice")
    assert_error(await b.call("orgGlobal", alice), 403, "insufficient_rights")
    assert data_of(await b.call("joinGlobal", alice)) == {"granted": ["read"]}
    assert data_of(await b.call("orgGlobal", alice)) == {"ok": True}


# --- across workspaces ----------------------------------------------------------------------


async def test_another_workspaces_token_is_refused_on_this_workspaces_data(
    client: AsyncClient,
) -> None:
    owner, app_id, a = await _setup(client)
    b = await consumer(client, app_id)
    a_token = await a.sign_in("alice", rights=["editor"])
    data_of(await a.call("addNote", a_token, text="from A"))
    # B's user has the same id and rights, but was signed in through B's partition.
    b_token = await b.sign_in("alice", rights=["editor"], admin=True)

    response = await a.call("addNote", b_token, text="B writing into A")
    assert_error(response, 401, "token_workspace_mismatch")
    assert_error(await a.call("whoAmI", b_token), 401, "token_workspace_mismatch")
    assert_error(await a.call("manage", b_token), 401, "token_workspace_mismatch")
    assert_error(
        await b.call("addNote", a_token, text="A writing into B"), 401, ("token_workspace_mismatch")
    )
    # The builder's own dev users are a partition of their own as well.
    dev = await client.post(
        "/api/v1/invocations",
        json={"appId": app_id, "api": "signIn", "version": "dev", "args": {"user": "alice"}},
        headers=owner.headers,
    )
    builder_token = data_of(dev)["session"]["token"]
    assert_error(await a.call("whoAmI", builder_token), 401, "token_workspace_mismatch")

    assert [note["text"] for note in await a.notes()] == ["from A"]
    assert await b.notes() == []


async def test_user_rights_of_another_workspace_grant_nothing(client: AsyncClient) -> None:
    _, app_id, a = await _setup(client)
    b = await consumer(client, app_id)
    data_of(await grant(client, a.user.headers, app_id, "alice", "firstOrg", ["read"]))
    b_alice = await b.sign_in("alice")
    assert_error(await b.call("orgRead", b_alice, orgId="firstOrg"), 403, "insufficient_rights")
    a_alice = await a.sign_in("alice")
    assert data_of(await a.call("orgRead", a_alice, orgId="firstOrg")) == {"org": "firstOrg"}
