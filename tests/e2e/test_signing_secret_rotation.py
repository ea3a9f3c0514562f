"""Rotating an app's end-user token signing secret over HTTP: tokens of the secret replaced are
refused at once, or accepted until a grace ends; new tokens work on `dev` and published versions;
one previous secret at most; admins only, other workspaces' apps are 404, bad input changes
nothing; concurrent rotations chain; an Idempotency-Key replays the answer. On both backends."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select

from apiforge.builder.models import App
from apiforge.builder.signing import open_signing_secret
from apiforge.engine.tokens import sign_end_user_token
from apiforge.tools.clock import utcnow
from tests.e2e._apps import app_state, in_workspace, signing_secret
from tests.e2e._clock import Clock, frozen_clock
from tests.e2e._perms import Consumer, consumer, perms_app
from tests.e2e._workspaces import assert_error, data_of, team
from tests.factories import User, register

GATEWAY = "/api/v1/invocations"


def _url(app_id: str) -> str:
    return f"/api/v1/apps/{app_id}/signing-secret/rotate"


async def _rotate(
    client: AsyncClient, headers: dict[str, str], app_id: str, **body: Any
) -> dict[str, Any]:
    answer: dict[str, Any] = data_of(await client.post(_url(app_id), json=body, headers=headers))
    return answer


async def _setup(client: AsyncClient) -> tuple[User, str, Consumer]:
    owner = await register(client)
    app_id = await perms_app(client, owner)  # published: consumers call `latest`
    return owner, app_id, await consumer(client, app_id)


async def _stored(app: FastAPI, app_id: str) -> tuple[str, str | None, datetime | None]:
    """The app's current and previous secrets (opened) and the end of the previous one."""
    async with app.state.engine.connect() as conn:
        row = (
            await conn.execute(
                select(
                    App.signing_secret,
                    App.previous_signing_secret,
                    App.previous_signing_secret_until,
                ).where(App.id == app_id)
            )
        ).one()
    settings = app.state.settings
    previous = row[1]
    return (
        open_signing_secret(settings, row[0]),
        None if previous is None else open_signing_secret(settings, previous),
        row[2],
    )


def _forged(secret: str, b: Consumer, sub: str = "mallory") -> str:
    """A token a holder of `secret` makes up now, for `b`'s partition."""
    return sign_end_user_token(
        secret, b.app_id, sub=sub, now=utcnow(), expires_in=600, workspace=b.user.workspace_id
    )


def _me(response: Response) -> str:
    me: str = data_of(response)["me"]
    return me


async def _dev(
    client: AsyncClient, owner: User, app_id: str, api: str, token: str | None = None, **args: Any
) -> Response:
    """A console call of `dev`, the end-user token in `X-End-User-Token`."""
    headers = dict(owner.headers)
    if token is not None:
        headers["X-End-User-Token"] = token
    body = {"appId": app_id, "api": api, "version": "dev", "args": args}
    return await client.post(GATEWAY, json=body, headers=headers)


def _until(answer: dict[str, Any]) -> datetime:
    return datetime.strptime(answer["previousValidUntil"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def _gateway_clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return frozen_clock(monkeypatch, ["apiforge.gateway.stages.permissions"], utcnow())


# --- what a rotation does ---------------------------------------------------------------------


async def test_without_a_grace_tokens_of_the_old_secret_are_refused_at_once(
    client: AsyncClient, app: FastAPI
) -> None:
    owner, app_id, b = await _setup(client)
    old_secret = await signing_secret(app, app_id)
    token = await b.sign_in("alice")
    dev_token = data_of(await _dev(client, owner, app_id, "signIn", user="builder"))["session"]
    assert _me(await b.call("whoAmI", token)) == "alice"  # remembered by the gateway
    assert _me(await _dev(client, owner, app_id, "whoAmI", dev_token["token"])) == "builder"
    before = await app_state(client, owner.headers, app_id)

    response = await client.post(_url(app_id), headers=owner.headers)  # no body: no grace
    answer = data_of(response)
    assert set(answer) == {"rotatedTime", "previousValidUntil"}
    assert answer["previousValidUntil"] is None
    rotated = datetime.strptime(answer["rotatedTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(rotated - utcnow()) < timedelta(minutes=1)
    new_secret, previous, until = await _stored(app, app_id)
    assert new_secret != old_secret
    assert (previous, until) == (None, None)
    assert old_secret not in response.text
    assert new_secret not in response.text
    # Nothing the app shows changed: its version (ETag) still holds for editors.
    assert await app_state(client, owner.headers, app_id) == before

    # Refused on `latest` and on `dev`, as any token with a bad signature.
    assert_error(await b.call("whoAmI", token), 401, "invalid_token")
    assert_error(
        await _dev(client, owner, app_id, "whoAmI", dev_token["token"]), 401, "invalid_token"
    )
    assert_error(await b.call("whoAmI", _forged(old_secret, b)), 401, "invalid_token")

    # New tokens are signed with the new secret, on `latest` and on `dev`, and accepted.
    fresh = await b.sign_in("alice")
    jwt.decode(fresh, new_secret, algorithms=["HS256"], audience=app_id)
    assert _me(await b.call("whoAmI", fresh)) == "alice"
    dev_fresh = data_of(await _dev(client, owner, app_id, "signIn", user="builder"))["session"]
    jwt.decode(dev_fresh["token"], new_secret, algorithms=["HS256"], audience=app_id)
    assert _me(await _dev(client, owner, app_id, "whoAmI", dev_fresh["token"])) == "builder"


async def test_with_a_grace_the_old_secret_is_accepted_until_it_ends(
    client: AsyncClient, app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, app_id, b = await _setup(client)
    old_secret = await signing_secret(app, app_id)
    token = await b.sign_in("alice")
    assert _me(await b.call("whoAmI", token)) == "alice"
    clock = _gateway_clock(monkeypatch)

    answer = await _rotate(client, owner.headers, app_id, graceSeconds=600)
    until = _until(answer)
    assert timedelta(seconds=598) <= until - utcnow() <= timedelta(seconds=600)
    new_secret, previous, stored_until = await _stored(app, app_id)
    assert (previous, stored_until) == (old_secret, until)

    # Within the grace: the old token, and one a holder of the old secret makes up now.
    forged = _forged(old_secret, b)
    clock.now = until - timedelta(seconds=1)
    assert _me(await b.call("whoAmI", token)) == "alice"
    assert _me(await b.call("whoAmI", forged)) == "mallory"
    fresh = await b.sign_in("bob")  # signed with the new secret only
    jwt.decode(fresh, new_secret, algorithms=["HS256"], audience=app_id)
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(fresh, old_secret, algorithms=["HS256"], audience=app_id)

    # The grace over: both refused though the gateway remembered them; the new one works.
    clock.now = until
    assert_error(await b.call("whoAmI", token), 401, "invalid_token")
    assert_error(await b.call("whoAmI", forged), 401, "invalid_token")
    assert _me(await b.call("whoAmI", fresh)) == "bob"


async def test_a_second_rotation_drops_the_older_previous_secret(
    client: AsyncClient, app: FastAPI
) -> None:
    owner, app_id, b = await _setup(client)
    first = await b.sign_in("alice")
    assert _me(await b.call("whoAmI", first)) == "alice"
    await _rotate(client, owner.headers, app_id, graceSeconds=3600)
    second = await b.sign_in("bob")
    assert _me(await b.call("whoAmI", first)) == "alice"

    answer = await _rotate(client, owner.headers, app_id, graceSeconds=60)
    assert answer["previousValidUntil"] is not None
    # The first secret went with the grace it had left; the second is now the previous.
    assert_error(await b.call("whoAmI", first), 401, "invalid_token")
    assert _me(await b.call("whoAmI", second)) == "bob"
    third = await b.sign_in("carol")
    assert _me(await b.call("whoAmI", third)) == "carol"

    await _rotate(client, owner.headers, app_id)  # no grace: only the newest secret is left
    assert_error(await b.call("whoAmI", second), 401, "invalid_token")
    assert_error(await b.call("whoAmI", third), 401, "invalid_token")
    assert (await _stored(app, app_id))[1:] == (None, None)


async def test_concurrent_rotations_chain_one_current_and_one_previous_secret(
    client: AsyncClient, app: FastAPI
) -> None:
    owner, app_id, b = await _setup(client)
    original = await signing_secret(app, app_id)
    responses = await asyncio.gather(
        *(
            client.post(_url(app_id), json={"graceSeconds": 300}, headers=owner.headers)
            for _ in range(6)
        )
    )
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    current, previous, until = await _stored(app, app_id)
    # Each rotation kept the secret the one before it made: never the original, six times over
    # (a lost update would keep the secret every one of them read first).
    assert previous is not None
    assert until is not None
    assert len({original, previous, current}) == 3
    assert_error(await b.call("whoAmI", _forged(original, b)), 401, "invalid_token")
    assert _me(await b.call("whoAmI", _forged(previous, b, "prev"))) == "prev"
    assert _me(await b.call("whoAmI", _forged(current, b, "cur"))) == "cur"


async def test_an_idempotency_key_replays_the_rotation(client: AsyncClient, app: FastAPI) -> None:
    owner, app_id, _ = await _setup(client)
    headers = {**owner.headers, "Idempotency-Key": "rotate-1"}
    first = await client.post(_url(app_id), json={"graceSeconds": 60}, headers=headers)
    secret = await signing_secret(app, app_id)
    again = await client.post(_url(app_id), json={"graceSeconds": 60}, headers=headers)
    assert first.status_code == again.status_code == 200
    assert again.headers.get("Idempotent-Replayed") == "1"
    assert again.content == first.content
    assert await signing_secret(app, app_id) == secret  # rotated once
    other = await client.post(_url(app_id), json={"graceSeconds": 0}, headers=headers)
    assert other.status_code == 422
    assert await signing_secret(app, app_id) == secret


# --- who may, and what is refused -------------------------------------------------------------


async def test_only_admins_and_the_owner_rotate(client: AsyncClient, app: FastAPI) -> None:
    owner, workspace_id, members = await team(client, "viewer", "editor", "admin")
    app_id = data_of(
        await client.post(
            "/api/v1/apps", json={"name": "Team app"}, headers=in_workspace(owner, workspace_id)
        )
    )["id"]
    secret = await signing_secret(app, app_id)
    for role in ("viewer", "editor"):
        response = await client.post(
            _url(app_id), json={}, headers=in_workspace(members[role], workspace_id)
        )
        assert_error(response, 403, "insufficient_role")
    assert await signing_secret(app, app_id) == secret
    await _rotate(client, in_workspace(members["admin"], workspace_id), app_id)
    assert await signing_secret(app, app_id) != secret
    secret = await signing_secret(app, app_id)
    await _rotate(client, in_workspace(owner, workspace_id), app_id, graceSeconds=1)
    assert (await _stored(app, app_id))[1] == secret


async def test_another_workspaces_app_is_not_found(client: AsyncClient, app: FastAPI) -> None:
    _, app_id, b = await _setup(client)  # a public app b has enabled: still not b's to rotate
    secret = await signing_secret(app, app_id)
    for target in (app_id, "0" * 26, "not-an-id"):
        response = await client.post(_url(target), json={}, headers=b.user.headers)
        assert_error(response, 404, "app_not_found")
    assert await signing_secret(app, app_id) == secret


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"[]",
        b'"x"',
        b'{"graceSeconds": -1}',
        b'{"graceSeconds": 86401}',
        b'{"graceSeconds": 99999999999999999999}',
        b'{"graceSeconds": "60"}',
        b'{"graceSeconds": 1.5}',
        b'{"graceSeconds": true}',
        b'{"graceSeconds": null}',
        b'{"graceSeconds": 60, "secret": "mine"}',
    ],
)
async def test_bad_input_is_400_and_changes_nothing(
    client: AsyncClient, app: FastAPI, body: bytes
) -> None:
    owner, app_id, _ = await _setup(client)
    before = await _stored(app, app_id)
    headers = {**owner.headers, "Content-Type": "application/json"}
    response = await client.post(_url(app_id), content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 400
    assert await _stored(app, app_id) == before


async def test_the_largest_grace_is_a_day(client: AsyncClient, app: FastAPI) -> None:
    owner, app_id, _ = await _setup(client)
    until = _until(await _rotate(client, owner.headers, app_id, graceSeconds=86400))
    assert timedelta(seconds=86398) <= until - utcnow() <= timedelta(seconds=86400)


async def test_an_export_carries_no_secret_and_an_import_gets_its_own(
    client: AsyncClient, app: FastAPI
) -> None:
    owner, app_id, _ = await _setup(client)
    await _rotate(client, owner.headers, app_id, graceSeconds=600)
    current, previous, _ = await _stored(app, app_id)
    assert previous is not None
    exported = await client.get(f"/api/v1/apps/{app_id}/export", headers=owner.headers)
    assert exported.status_code == 200
    assert current not in exported.text
    assert previous not in exported.text
    imported = await client.post(
        "/api/v1/apps/import",
        content=exported.content,
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    new_id = data_of(imported)["id"]
    copy = await _stored(app, new_id)
    assert copy[0] not in {current, previous}
    assert copy[1:] == (None, None)
