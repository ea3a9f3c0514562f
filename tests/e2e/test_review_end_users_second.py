"""Second review of apps' end users: the documented sign-up / sign-in / call flow works through a
consumer's key on a published version; a grant committed while a revoke reads the user's row is
kept on both backends; a `password` check against a non-ASCII "hash" is false, not a 500; a
`jwtSign` whose literal rights, sub or claims no call could sign is refused when saved."""

import asyncio
from typing import Any

import jwt
import pytest
from httpx import AsyncClient, Response

from apiforge.rights import store
from apiforge.rights.store import RightsKey
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key, call
from tests.e2e._perms import grant, user_rights
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register

URL = "/api/v1/invocations"
USERS = {
    "name": "users",
    "fields": [
        {"name": "email", "type": "string", "required": True, "unique": True},
        {"name": "passwordHash", "type": "string"},
    ],
}
CREDENTIALS = [
    {"name": "email", "type": "string", "required": True},
    {"name": "password", "type": "string", "required": True, "sensitive": True},
]
# The guide's `password` example (docs/builder.md), plus an API for signed-in members of an org.
SIGN_UP = [
    {"id": "hashed", "type": "password", "action": "hash", "password": {"expr": "args.password"}},
    {
        "id": "user",
        "type": "insert",
        "collection": "users",
        "data": {"email": {"expr": "args.email"}, "passwordHash": {"expr": "steps.hashed"}},
    },
]
SIGN_IN = [
    {
        "id": "user",
        "type": "getOne",
        "collection": "users",
        "filter": {"email": {"_eq": {"expr": "args.email"}}},
    },
    {
        "id": "ok",
        "type": "password",
        "action": "verify",
        "password": {"expr": "args.password"},
        "hash": {"expr": "steps.user == null ? null : steps.user.passwordHash"},
    },
    {
        "id": "check",
        "type": "assert",
        "condition": {"expr": "steps.ok"},
        "status": 401,
        "error": "wrong_credentials",
        "message": "Wrong email or password",
    },
    {"id": "session", "type": "jwtSign", "sub": {"expr": "steps.user.id"}, "expiresIn": 86400},
]
ME = [
    {
        "id": "me",
        "type": "getOne",
        "collection": "users",
        "filter": {"id": {"_eq": {"expr": "token.sub"}}},
    },
    {"id": "email", "type": "set", "value": {"expr": "steps.me.email"}},
]
ORG_MEMBERS = {
    "requireToken": True,
    "mode": "userSystem",
    "rights": ["member"],
    "target": {"source": "arg", "value": "orgId"},
}


async def _auth_app(client: AsyncClient, headers: dict[str, str], name: str) -> str:
    """A public app with the guide's users collection, signUp, signIn and me, published."""
    app_id = await new_app(client, headers, name, visibility="public")
    data_of(await client.post("/api/v1/datasets", json={"appId": app_id, **USERS}, headers=headers))
    await new_api(
        client,
        headers,
        app_id,
        "signUp",
        params=CREDENTIALS,
        steps=SIGN_UP,
        returnSteps=[],
        price=10,
    )
    await new_api(
        client,
        headers,
        app_id,
        "signIn",
        params=CREDENTIALS,
        steps=SIGN_IN,
        returnSteps=["session"],
        price=10,
    )
    org = [{"name": "orgId", "type": "string", "default": "org-1", "max": 128}]
    await new_api(
        client,
        headers,
        app_id,
        "me",
        params=org,
        steps=ME,
        returnSteps=["email"],
        auth=ORG_MEMBERS,
        price=10,
    )
    publish = {"bump": "minor", "notes": "first"}
    data_of(await client.post(f"/api/v1/apps/{app_id}/versions", json=publish, headers=headers))
    return app_id


async def test_the_guides_sign_up_and_sign_in_flow_serves_a_consumers_users(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id = await _auth_app(client, owner.headers, "Accounts")
    other_app = await _auth_app(client, owner.headers, "Other")
    consumer = await register(client)
    _, secret = await app_key(client, consumer, app_id)
    ada = {"email": "ada@example.com", "password": "correct horse"}

    assert data_of(await call(client, secret, app_id, "signUp", ada)) == {}
    again = await call(client, secret, app_id, "signUp", ada)
    assert_error(again, 409, "duplicate_value")
    wrong = await call(client, secret, app_id, "signIn", {**ada, "password": "wrong horse"})
    assert_error(wrong, 401, "wrong_credentials")
    nobody = await call(client, secret, app_id, "signIn", {**ada, "email": "bob@example.com"})
    assert_error(nobody, 401, "wrong_credentials")
    token = data_of(await call(client, secret, app_id, "signIn", ada))["session"]["token"]
    bearer = {"Authorization": f"Bearer {token}"}

    async def me(**args: Any) -> Response:
        return await call(client, secret, app_id, "me", args, headers=bearer)

    assert_error(await me(), 403, "insufficient_rights")
    sub = jwt.decode(token, options={"verify_signature": False})["sub"]
    data_of(await grant(client, consumer.headers, app_id, sub, "org-1", ["member"]))
    assert data_of(await me()) == {"email": "ada@example.com"}  # the param's default target
    assert data_of(await me(orgId="org-1")) == {"email": "ada@example.com"}
    assert_error(await me(orgId="org-2"), 403, "insufficient_rights")
    assert_error(await me(orgId=["org-1"]), 400, "invalid_arguments")
    # The same workspace's other app, with the same APIs, refuses the token (its `aud`).
    _, other_secret = await app_key(client, consumer, other_app)
    refused = await call(client, other_secret, other_app, "me", headers=bearer)
    assert_error(refused, 401, "invalid_token")


@pytest.mark.parametrize("revoked", [["read"], None], ids=["some", "all"])
async def test_a_grant_made_while_a_revoke_reads_the_row_is_kept(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch, revoked: list[str] | None
) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Rights")
    data_of(await grant(client, owner.headers, app_id, "alice", "org", ["read", "x"]))
    read_rights = store.held_rights
    racing: list[asyncio.Task[Response]] = []

    async def held_then_granted(
        connection: Any, key: RightsKey, *, lock: bool = False
    ) -> list[str] | None:
        """The revoke's read of the row, then another request's grant of the same row, given
        time to commit before the revoke writes (it waits instead when the revoke holds the
        row)."""
        held = await read_rights(connection, key, lock=lock)
        if lock and not racing:
            body = grant(client, owner.headers, app_id, "alice", "org", ["write"])
            racing.append(asyncio.create_task(body))
            await asyncio.wait(racing, timeout=0.5)
        return held

    monkeypatch.setattr(store, "held_rights", held_then_granted)
    query = "userId=alice&target=org" + "".join(f"&rights={r}" for r in revoked or [])
    path = f"/api/v1/apps/{app_id}/user-rights?{query}"
    data_of(await client.delete(path, headers=owner.headers))
    data_of(await racing[0])

    rows = await user_rights(client, owner.headers, app_id)
    assert [row["rights"] for row in rows] == [["x", "write"] if revoked else ["write"]]


@pytest.mark.parametrize(
    "stored",
    ["é", "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2g€", "pässwörd-hash"],
)
async def test_a_password_check_against_a_non_ascii_hash_is_false(
    client: AsyncClient, stored: str
) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Accounts")
    verify = {
        "id": "ok",
        "type": "password",
        "action": "verify",
        "password": {"expr": "args.password"},
        "hash": {"expr": "args.stored"},
    }
    body = {"appId": app_id, "steps": [verify], "args": {"password": "é", "stored": stored}}
    response = await client.post("/api/v1/workflows", json=body, headers=owner.headers)
    assert data_of(response) == {"ok": False}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"sub": "u" * 129}, "sub"),
        ({"sub": "u", "rights": [""]}, "rights"),
        ({"sub": "u", "rights": ["r" * 129]}, "rights"),
        ({"sub": "u", "rights": [f"r{i}" for i in range(101)]}, "rights"),
        ({"sub": "u", "claims": {"bio": "x" * 9000}}, "claims"),
    ],
)
async def test_a_jwt_sign_no_call_could_run_is_refused_when_saved(
    client: AsyncClient, config: dict[str, Any], field: str
) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Accounts")
    step = {"id": "session", "type": "jwtSign", **config}
    body = {"api": "signIn", "steps": [step], "price": 10}
    response = await client.post(f"/api/v1/apps/{app_id}/apis", json=body, headers=owner.headers)
    data = assert_error(response, 400, "invalid_definition")
    assert data["errors"][0]["field"] == f"steps.session.{field}"
    listed = await client.get(f"/api/v1/apps/{app_id}/apis", headers=owner.headers)
    assert data_of(listed)["list"] == []
