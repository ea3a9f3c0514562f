"""Console account security: changing the password (other sessions end, this one stays, the
check is throttled with sign-ins), listing and ending one's own sessions (others' are a 404),
and Unicode-normalised passwords (NFKC) that still accept hashes made before normalisation."""

import asyncio
import threading
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from limits.aio.storage import MemoryStorage
from sqlalchemy import select, update

import apiforge.accounts.service as account_service
from apiforge.accounts import passwords
from apiforge.accounts.models import Account, LoginSession, RefreshToken
from apiforge.accounts.passwords import Verdict, hash_password, verify_password
from apiforge.accounts.throttle import LoginThrottle
from apiforge.accounts.tokens import ISSUER
from apiforge.core.db import session_scope
from apiforge.tools.clock import utcnow
from tests.e2e._accounts import (
    NEW_PASSWORD,
    PASSWORD_PATH,
    SESSIONS_PATH,
    bearer,
    change_password,
    login,
    refresh,
    stored_hash,
)
from tests.e2e._keys import create_key, notes_app
from tests.e2e._snapshots import snapshot
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import PASSWORD, register


async def _signed_in(client: AsyncClient, email: str, agent: str = "test-agent") -> dict[str, Any]:
    data: dict[str, Any] = data_of(await login(client, email, agent=agent))
    return data


async def _invoke(client: AsyncClient, token: str, app_id: str) -> Response:
    body = {"appId": app_id, "api": "echo", "version": "latest", "args": {"text": "hi"}}
    return await client.post("/api/v1/invocations", json=body, headers=bearer(token))


# --- changing the password ---------------------------------------------------------------------


async def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    other = await _signed_in(client, user.email)
    third = await _signed_in(client, user.email)
    app_id = await notes_app(client, user)
    assert (await _invoke(client, other["accessToken"], app_id)).status_code == 200

    changed = data_of(await change_password(client, user.access_token))
    assert changed == {"id": user.account_id, "endedSessions": 2}

    # This session goes on: its access token and its refresh token work.
    data_of(await client.get("/api/v1/user/profile", headers=user.headers))
    data_of(await refresh(client, user.refresh_token))
    # The others end at once, on the management API, the gateway and at refresh.
    for ended in (other, third):
        response = await client.get("/api/v1/user/profile", headers=bearer(ended["accessToken"]))
        assert_error(response, 401, "session_revoked")
        assert_error(await refresh(client, ended["refreshToken"]), 401, "session_revoked")
    assert_error(await _invoke(client, other["accessToken"], app_id), 401, "session_revoked")
    # Only the new password signs in.
    assert_error(await login(client, user.email), 401, "invalid_credentials")
    data_of(await login(client, user.email, NEW_PASSWORD))
    assert (await stored_hash(app, user.account_id)).startswith("$argon2id$")


async def test_a_wrong_current_password_is_refused_changes_nothing_and_is_throttled(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    other = await _signed_in(client, user.email)
    before = await snapshot(app)
    limit = app.state.settings.login_max_failures
    for _ in range(limit):
        refused = await change_password(client, user.access_token, current="not the password")
        data = assert_error(refused, 400, "current_password_wrong")
        assert data["errors"] == [{"field": "currentPassword", "message": "is wrong"}]
    # The same windows as sign-in: neither this route nor sign-in can go on guessing.
    throttled = await change_password(client, user.access_token, current="still not it")
    assert_error(throttled, 429, "login_throttled")
    assert throttled.headers["Retry-After"]
    assert_error(await change_password(client, user.access_token), 429, "login_throttled")
    assert_error(await login(client, user.email), 429, "login_throttled")
    assert await snapshot(app) == before
    data_of(await client.get("/api/v1/user/profile", headers=bearer(other["accessToken"])))


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"currentPassword": PASSWORD, "newPassword": "short"}, "invalid_input"),
        ({"currentPassword": PASSWORD, "newPassword": "x" * 129}, "invalid_input"),
        ({"currentPassword": PASSWORD, "newPassword": 12345678}, "invalid_input"),
        ({"currentPassword": PASSWORD}, "missing_parameters"),
        ({"newPassword": NEW_PASSWORD}, "missing_parameters"),
        ({"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD, "x": 1}, "invalid_input"),
        ({"currentPassword": PASSWORD, "newPassword": PASSWORD}, "password_unchanged"),
    ],
)
async def test_a_new_password_follows_the_sign_up_rules(
    app: FastAPI, client: AsyncClient, body: dict[str, Any], reason: str
) -> None:
    user = await register(client)
    other = await _signed_in(client, user.email)
    before = await snapshot(app)
    response = await client.post(PASSWORD_PATH, json=body, headers=user.headers)
    assert_error(response, 400, reason)
    assert await snapshot(app) == before
    data_of(await client.get("/api/v1/user/profile", headers=bearer(other["accessToken"])))
    data_of(await login(client, user.email))


async def test_the_same_password_in_a_compatible_form_is_unchanged(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in PASSWORD)
    assert_error(
        await change_password(client, user.access_token, new=fullwidth), 400, "password_unchanged"
    )


async def test_only_a_console_sign_in_reaches_the_password_and_sessions(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    _, key = await create_key(client, user.headers, type="ws", role="admin")
    settings = app.state.settings
    foreign = jwt.encode(  # an end-user token: another audience, even under the same key
        {"iss": ISSUER, "aud": "end-user", "sub": user.account_id, "sid": "x", "iat": 1},
        settings.signing_key,
        algorithm="HS256",
    )
    body = {"currentPassword": PASSWORD, "newPassword": NEW_PASSWORD}
    routes = [("POST", PASSWORD_PATH), ("GET", SESSIONS_PATH), ("DELETE", f"{SESSIONS_PATH}/x")]
    before = await snapshot(app)
    for method, path in routes:
        payload = body if method == "POST" else None
        for headers, status, reason in [
            ({"X-Api-Key": key}, 403, "workspace_key_not_allowed"),
            ({"Authorization": f"Bearer {key}"}, 403, "workspace_key_not_allowed"),
            (bearer(foreign), 401, "invalid_token"),
            ({}, 401, "unauthenticated"),
        ]:
            response = await client.request(method, path, json=payload, headers=headers)
            assert_error(response, status, reason)
    assert await snapshot(app) == before
    data_of(await login(client, user.email))


async def test_a_disabled_account_cannot_change_its_password(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    async for session in session_scope(app.state.sessionmaker):
        await session.execute(
            update(Account).where(Account.id == user.account_id).values(status="disabled")
        )
    before = await snapshot(app)
    assert_error(await change_password(client, user.access_token), 401, "account_disabled")
    assert await snapshot(app) == before


async def test_a_sign_in_with_the_old_password_racing_a_change_is_refused(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sign-in checked the old password before the change committed: it must not start a
    session the change did not end."""
    user = await register(client)
    checked, go_on = threading.Event(), threading.Event()
    check = passwords.check_console_password

    def slow_for_login(stored: str | None, password: str) -> Verdict:
        verdict = check(stored, password)
        if not checked.is_set():  # the first check is the sign-in's
            checked.set()
            assert go_on.wait(10)
        return verdict

    monkeypatch.setattr(account_service, "check_console_password", slow_for_login)
    signing_in = asyncio.create_task(login(client, user.email))
    assert await asyncio.to_thread(checked.wait, 10)
    data_of(await change_password(client, user.access_token))
    go_on.set()
    assert_error(await signing_in, 401, "invalid_credentials")
    async for session in session_scope(app.state.sessionmaker):
        live = await session.scalars(
            select(LoginSession.id).where(
                LoginSession.account_id == user.account_id, LoginSession.revoked_at.is_(None)
            )
        )
        assert len(live.all()) == 1  # the session that changed the password


# --- listing and ending sessions ---------------------------------------------------------------


async def test_sessions_are_listed_with_their_client_and_the_current_one_marked(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    phone = await _signed_in(client, user.email, agent="Phone/1.0")
    laptop = await _signed_in(client, user.email, agent="Laptop/2.0")
    gone = await _signed_in(client, user.email)
    data_of(await client.post("/api/v1/auth/logout", json={}, headers=bearer(gone["accessToken"])))

    listed = data_of(await client.get(SESSIONS_PATH, headers=bearer(laptop["accessToken"])))
    assert (listed["totalCount"], listed["totalPage"], listed["pageNo"]) == (3, 1, 1)
    rows = listed["list"]
    assert [row["userAgent"] for row in rows[:2]] == ["Laptop/2.0", "Phone/1.0"]
    assert rows[2]["userAgent"].startswith("python-httpx/")  # the sign-up's
    assert [row["current"] for row in rows] == [1, 0, 0]
    first = rows[0]
    assert set(first) == {
        "id",
        "current",
        "createdTime",
        "lastRefreshedTime",
        "expiresTime",
        "clientIp",
        "userAgent",
    }
    assert first["clientIp"] == "127.0.0.1"
    assert first["lastRefreshedTime"] is None
    assert first["createdTime"].endswith("Z")
    assert first["expiresTime"] > first["createdTime"]

    # A refresh records when and from where; the session keeps its id.
    refreshed = await client.post(
        "/api/v1/auth/refresh",
        json={"refreshToken": phone["refreshToken"]},
        headers={"User-Agent": "Phone/1.1"},
    )
    new_token = data_of(refreshed)["accessToken"]
    listed = data_of(await client.get(SESSIONS_PATH, headers=bearer(new_token)))
    mine = [row for row in listed["list"] if row["current"]]
    assert len(mine) == 1
    assert mine[0]["userAgent"] == "Phone/1.1"
    assert mine[0]["lastRefreshedTime"] is not None
    by_refresh = data_of(
        await client.get(
            f"{SESSIONS_PATH}?sort=lastRefreshedTime&order=desc&pageSize=1",
            headers=bearer(new_token),
        )
    )
    assert (by_refresh["totalPage"], by_refresh["list"][0]["current"]) == (3, 1)
    assert_error(
        await client.get(f"{SESSIONS_PATH}?sort=userAgent", headers=user.headers),
        400,
        "invalid_sort_field",
    )
    assert_error(
        await client.get(f"{SESSIONS_PATH}?pageSize=0", headers=user.headers), 400, "invalid_input"
    )
    # Another account sees only its own.
    stranger = await register(client)
    theirs = data_of(await client.get(SESSIONS_PATH, headers=stranger.headers))
    assert theirs["totalCount"] == 1
    assert theirs["list"][0]["current"] == 1


async def test_a_session_whose_refresh_token_expired_is_not_listed(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    stale = _sid((await _signed_in(client, user.email))["accessToken"])
    async for session in session_scope(app.state.sessionmaker):
        await session.execute(
            update(RefreshToken).where(RefreshToken.session_id == stale).values(expires_at=utcnow())
        )
    listed = data_of(await client.get(SESSIONS_PATH, headers=user.headers))
    assert [row["id"] for row in listed["list"]] == [_sid(user.access_token)]


def _sid(token: str) -> str:
    sid: str = jwt.decode(token, options={"verify_signature": False})["sid"]
    return sid


async def test_ending_a_session_works_at_once_and_only_on_ones_own(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    other = await _signed_in(client, user.email)
    stranger = await register(client)
    app_id = await notes_app(client, user)
    target = f"{SESSIONS_PATH}/{_sid(other['accessToken'])}"

    # Another account naming it, an unknown or malformed id: the same 404, nothing ended.
    before = await snapshot(app)
    for path, headers in [
        (target, stranger.headers),
        (f"{SESSIONS_PATH}/{_sid(stranger.access_token)}", user.headers),
        (f"{SESSIONS_PATH}/01jgq4x7m2c9v5t8r3n6p1k0hd", user.headers),
        (f"{SESSIONS_PATH}/not-an-id", user.headers),
        (f"{SESSIONS_PATH}/{'a' * 3000}", user.headers),
    ]:
        assert_error(await client.delete(path, headers=headers), 404, "session_not_found")
    assert await snapshot(app) == before
    data_of(await client.get("/api/v1/user/profile", headers=bearer(other["accessToken"])))
    data_of(await client.get("/api/v1/user/profile", headers=stranger.headers))

    assert data_of(await client.delete(target, headers=user.headers)) == {
        "id": _sid(other["accessToken"])
    }
    ended = bearer(other["accessToken"])
    assert_error(await client.get("/api/v1/user/profile", headers=ended), 401, "session_revoked")
    assert_error(await _invoke(client, other["accessToken"], app_id), 401, "session_revoked")
    assert_error(await refresh(client, other["refreshToken"]), 401, "session_revoked")
    assert_error(await client.delete(target, headers=user.headers), 404, "session_not_found")
    listed = data_of(await client.get(SESSIONS_PATH, headers=user.headers))
    assert [row["id"] for row in listed["list"]] == [_sid(user.access_token)]
    # Through the method override too; ending one's own current session signs it out.
    mine = f"{SESSIONS_PATH}/{_sid(user.access_token)}"
    override = {**user.headers, "X-HTTP-Method-Override": "DELETE"}
    data_of(await client.post(mine, headers=override))
    assert_error(await client.get(SESSIONS_PATH, headers=user.headers), 401, "session_revoked")


# --- Unicode normalisation ---------------------------------------------------------------------

DECOMPOSED = "Ade\u0301la's pa\u0301ssword"  # e + combining acute
COMPOSED = "Ad\u00e9la's p\u00e1ssword"


async def test_a_password_signs_in_whichever_unicode_form_is_typed(
    app: FastAPI, client: AsyncClient
) -> None:
    body = {"email": "adela@example.com", "password": DECOMPOSED}
    data_of(await client.post("/api/v1/auth/register", json=body))
    data_of(await login(client, "adela@example.com", COMPOSED))
    data_of(await login(client, "adela@example.com", DECOMPOSED))
    # NFKC: a full-width form (as an East Asian IME types it) is the same password.
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in COMPOSED)
    data_of(await login(client, "adela@example.com", fullwidth))
    assert_error(
        await login(client, "adela@example.com", "Adela's password"), 401, "invalid_credentials"
    )


async def test_a_hash_made_before_normalisation_still_signs_in_and_is_rehashed(
    app: FastAPI, client: AsyncClient
) -> None:
    """Accounts whose hash is of the password as typed (before this release) keep signing in
    with that form; the hash is then redone in the normalised form, so every form works."""
    user = await register(client)
    legacy = hash_password(DECOMPOSED)  # how sign-up hashed it before
    async for session in session_scope(app.state.sessionmaker):
        await session.execute(
            update(Account).where(Account.id == user.account_id).values(password_hash=legacy)
        )
    assert_error(await login(client, user.email, COMPOSED), 401, "invalid_credentials")
    data_of(await login(client, user.email, DECOMPOSED))
    stored = await stored_hash(app, user.account_id)
    assert stored != legacy
    assert verify_password(stored, COMPOSED)
    data_of(await login(client, user.email, COMPOSED))


async def test_a_legacy_hash_is_accepted_as_the_current_password(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    async for session in session_scope(app.state.sessionmaker):
        await session.execute(
            update(Account)
            .where(Account.id == user.account_id)
            .values(password_hash=hash_password(DECOMPOSED))
        )
    data_of(
        await change_password(client, user.access_token, current=DECOMPOSED, new=DECOMPOSED + "!")
    )
    data_of(await login(client, user.email, COMPOSED + "!"))


async def test_surrounding_whitespace_is_trimmed_as_before_and_inner_spaces_count(
    client: AsyncClient,
) -> None:
    """Pinned, not new: every input field is trimmed (`InputModel`), passwords included, on
    sign-up, sign-in and change alike; what is inside is kept."""
    body = {"email": "spaces@example.com", "password": "  two  words  "}
    data_of(await client.post("/api/v1/auth/register", json=body))
    data_of(await login(client, "spaces@example.com", "two  words"))
    data_of(await login(client, "spaces@example.com", "\ttwo  words \n"))
    assert_error(await login(client, "spaces@example.com", "two words"), 401, "invalid_credentials")


# --- the sign-in throttle's in-process windows -------------------------------------------------


async def test_a_proven_password_clears_its_window_without_killing_the_expiry_task() -> None:
    """`limits`' in-process storage expires windows in a task that awaits a thread between the
    keys it listed; clearing a listed key under it (a right password: sign-in or change) made
    it read a deleted key, and the KeyError killed the task and failed the request's test."""
    storage = MemoryStorage()
    throttle = LoginThrottle(storage, 5, 60)
    await throttle.reserve("a@example.com", "192.0.2.1")
    await throttle.reserve("b@example.com", "192.0.2.1")
    await asyncio.sleep(0)  # the expiry task starts, and waits on its thread at the first key
    expiry = storage.timer
    assert expiry is not None
    await throttle.succeeded("b@example.com", "192.0.2.1")
    await asyncio.wait([expiry], timeout=5)
    assert expiry.done()
    assert expiry.exception() is None
    stats = await throttle.limiter.get_window_stats(throttle.item, "login-email", "b@example.com")
    assert stats.remaining == 5
