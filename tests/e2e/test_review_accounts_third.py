"""Third review of console account security: password lengths are those of the normalised (NFKC)
password, a password change whose own session ends meanwhile is refused, a refresh racing the end
of its session gets no dead pair, an account deleted during a change is a 401, and sessions have
an absolute lifetime (`APIFORGE_SESSION_MAX_DAYS`) however often they are refreshed."""

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, update

import apiforge.accounts.service as account_service
from apiforge.accounts import passwords
from apiforge.accounts.models import LoginSession, RefreshToken
from apiforge.accounts.passwords import Verdict
from apiforge.accounts.service import AccountService
from apiforge.core.db import session_scope
from apiforge.core.settings import Settings
from apiforge.tools.clock import utcnow
from tests.e2e._accounts import (
    SESSIONS_PATH,
    bearer,
    change_password,
    login,
    refresh,
)
from tests.e2e._snapshots import snapshot
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import PASSWORD, app_client, make_admin, register


def _sid(token: str) -> str:
    sid: str = jwt.decode(token, options={"verify_signature": False})["sid"]
    return sid


async def _live_sessions(app: FastAPI, account_id: str) -> set[str]:
    async for session in session_scope(app.state.sessionmaker):
        rows = await session.scalars(
            select(LoginSession.id).where(
                LoginSession.account_id == account_id, LoginSession.revoked_at.is_(None)
            )
        )
        return set(rows)
    raise AssertionError


class _Pause:
    """Holds the first password check (run in a thread) until released: a request stopped for
    certain between reading its account and writing, where another request then runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.checked, self.go_on = threading.Event(), threading.Event()
        self.monkeypatch = monkeypatch

    def arm(self) -> None:
        """Hold the next password check (the set-up's sign-ins are done)."""
        check: Callable[[str | None, str], Verdict] = passwords.check_console_password

        def paused(stored: str | None, password: str) -> Verdict:
            verdict = check(stored, password)
            if not self.checked.is_set():
                self.checked.set()
                assert self.go_on.wait(10)
            return verdict

        self.monkeypatch.setattr(account_service, "check_console_password", paused)

    async def reached(self) -> None:
        assert await asyncio.to_thread(self.checked.wait, 10)


@pytest.fixture
def pause(monkeypatch: pytest.MonkeyPatch) -> _Pause:
    return _Pause(monkeypatch)


# --- lengths of the normalised password --------------------------------------------------------

SHORT_DECOMPOSED = "e\u0301" * 4  # 8 code points as typed, "éééé" (4) once normalised
LONG_COMPOSED = "\u00e9" * 128  # the longest password, typed composed ...
LONG_DECOMPOSED = "e\u0301" * 128  # ... and as another keyboard sends it: 256 code points


async def test_a_password_that_normalises_below_eight_characters_is_refused(
    app: FastAPI, client: AsyncClient
) -> None:
    """Length is checked on the password that is hashed: four characters typed decomposed
    passed the 8-character minimum and were stored as a 4-character password."""
    body = {"email": "short@example.com", "password": SHORT_DECOMPOSED}
    response = await client.post("/api/v1/auth/register", json=body)
    errors = assert_error(response, 400, "invalid_input")["errors"]
    assert [error["field"] for error in errors] == ["password"]
    user = await register(client)
    before = await snapshot(app)
    refused = await change_password(client, user.access_token, new=SHORT_DECOMPOSED)
    assert [e["field"] for e in assert_error(refused, 400, "invalid_input")["errors"]] == [
        "newPassword"
    ]
    assert await snapshot(app) == before
    # Full-width forms fold one to one: eight of them are eight characters, and fine.
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in "abcdefgh")
    data_of(await change_password(client, user.access_token, new=fullwidth))
    data_of(await login(client, user.email, "abcdefgh"))


async def test_the_longest_password_signs_in_and_changes_in_its_decomposed_form(
    app: FastAPI, client: AsyncClient
) -> None:
    """A password of 128 characters is the same password typed decomposed (256 code points):
    sign-in and the current password took the typed length and refused it as input."""
    body = {"email": "long@example.com", "password": LONG_COMPOSED}
    data_of(await client.post("/api/v1/auth/register", json=body))
    signed_in = data_of(await login(client, "long@example.com", LONG_DECOMPOSED))
    data_of(await change_password(client, signed_in["accessToken"], current=LONG_DECOMPOSED))
    # Sign-up takes it decomposed as well, and still refuses 129 characters in any form.
    body = {"email": "long2@example.com", "password": LONG_DECOMPOSED}
    data_of(await client.post("/api/v1/auth/register", json=body))
    data_of(await login(client, "long2@example.com", LONG_COMPOSED))
    body = {"email": "long3@example.com", "password": LONG_DECOMPOSED + "e\u0301"}
    assert_error(await client.post("/api/v1/auth/register", json=body), 400, "invalid_input")
    # Input stays bounded before any normalising or hashing.
    huge = {"email": "long@example.com", "password": "e\u0301" * 5000}
    assert_error(await client.post("/api/v1/auth/login", json=huge), 400, "invalid_input")


# --- races with the end of a session ---------------------------------------------------------


async def test_a_password_change_whose_session_is_ended_meanwhile_is_refused(
    app: FastAPI, client: AsyncClient, pause: _Pause
) -> None:
    """A stolen session changing the password while its owner ends it from another device: the
    change must not land after the session it came from was ended (locking the owner out)."""
    thief = await register(client)
    owner = data_of(await login(client, thief.email))
    pause.arm()
    change = asyncio.create_task(change_password(client, thief.access_token))
    await pause.reached()
    ended = await client.delete(
        f"{SESSIONS_PATH}/{_sid(thief.access_token)}", headers=bearer(owner["accessToken"])
    )
    data_of(ended)
    pause.go_on.set()
    assert_error(await change, 401, "session_revoked")
    # Nothing changed: the old password still signs in, the owner's session still works.
    assert await _live_sessions(app, thief.account_id) == {_sid(owner["accessToken"])}
    data_of(await client.get("/api/v1/user/profile", headers=bearer(owner["accessToken"])))
    data_of(await login(client, thief.email))


async def test_a_refresh_racing_a_password_change_gets_no_dead_pair(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The refresh read its session live, then a password change ended it: a 200 with tokens
    that fail on first use is a lie; the refresh is refused as the session is."""
    user = await register(client)
    other = data_of(await login(client, user.email))
    read, go_on = asyncio.Event(), asyncio.Event()
    presented = AccountService._presented

    async def held(self: AccountService, token: str) -> Any:
        found = await presented(self, token)
        read.set()
        await asyncio.wait_for(go_on.wait(), 10)
        return found

    monkeypatch.setattr(AccountService, "_presented", held)
    refreshing = asyncio.create_task(refresh(client, other["refreshToken"]))
    await asyncio.wait_for(read.wait(), 10)
    monkeypatch.setattr(AccountService, "_presented", presented)
    data_of(await change_password(client, user.access_token))
    go_on.set()
    assert_error(await refreshing, 401, "session_revoked")
    assert await _live_sessions(app, user.account_id) == {_sid(user.access_token)}


async def test_a_password_change_racing_the_deletion_of_its_account_is_a_401(
    app: FastAPI, client: AsyncClient, pause: _Pause
) -> None:
    """The account is gone (its sessions with it): the session is over, not "disabled"."""
    admin = await make_admin(app, client)
    user = await register(client)
    pause.arm()
    change = asyncio.create_task(change_password(client, user.access_token))
    await pause.reached()
    deleted = await client.delete(f"/api/v1/admin/users/{user.account_id}", headers=admin.headers)
    data_of(deleted)
    pause.go_on.set()
    assert_error(await change, 401, "session_revoked")


# --- the absolute lifetime of a session --------------------------------------------------------


async def _age_session(app: FastAPI, session_id: str, days: float) -> None:
    """Move the session's sign-in `days` into the past (its tokens are left as they are)."""
    async for session in session_scope(app.state.sessionmaker):
        await session.execute(
            update(LoginSession)
            .where(LoginSession.id == session_id)
            .values(created_at=utcnow() - timedelta(days=days))
        )


async def test_a_session_refreshed_forever_still_ends_after_its_maximum_lifetime(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    sid = _sid(user.access_token)
    max_days = app.state.settings.session_max_days
    assert max_days == 30  # the documented default
    # Refreshed within the lifetime: works, and its new refresh token ends with the session.
    await _age_session(app, sid, max_days - 1)
    pair = data_of(await refresh(client, user.refresh_token))
    listed = data_of(await client.get(SESSIONS_PATH, headers=bearer(pair["accessToken"])))
    (row,) = listed["list"]
    async for session in session_scope(app.state.sessionmaker):
        stored = await session.get(LoginSession, sid)
        assert stored is not None
        end = stored.created_at + timedelta(days=max_days)
        expires = await session.scalar(
            select(RefreshToken.expires_at).where(
                RefreshToken.session_id == sid, RefreshToken.used_at.is_(None)
            )
        )
        assert expires is not None
        assert expires <= end
    assert row["expiresTime"] == end.strftime("%Y-%m-%dT%H:%M:%SZ")
    # The access token does not outlive the session either.
    claims = jwt.decode(pair["accessToken"], options={"verify_signature": False})
    assert claims["exp"] <= end.timestamp() + 1
    # Past the lifetime: the refresh is refused, and the session is no longer listed.
    await _age_session(app, sid, max_days + 0.01)
    assert_error(await refresh(client, pair["refreshToken"]), 401, "session_expired")
    fresh = data_of(await login(client, user.email))
    listed = data_of(await client.get(SESSIONS_PATH, headers=bearer(fresh["accessToken"])))
    assert [row["id"] for row in listed["list"]] == [_sid(fresh["accessToken"])]


async def test_a_session_lifetime_near_its_end_gives_shorter_tokens(
    settings: Settings,
) -> None:
    """`APIFORGE_SESSION_MAX_DAYS=1`: a refresh an hour before the end gets an access token and
    `expiresIn` no longer than the hour."""
    async with app_client(settings.model_copy(update={"session_max_days": 1})) as (app, client):
        user = await register(client)
        await _age_session(app, _sid(user.access_token), 1 - 1 / 24 / 60)  # a minute left
        pair = data_of(await refresh(client, user.refresh_token))
        assert 0 < pair["expiresIn"] <= 60
        claims = jwt.decode(pair["accessToken"], options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] <= 61
        data_of(await client.get("/api/v1/user/profile", headers=bearer(pair["accessToken"])))


# --- what a session shows of its client ------------------------------------------------------


async def test_a_session_shows_its_user_agent_as_sent_without_control_characters(
    client: AsyncClient,
) -> None:
    """Header bytes are UTF-8 in practice (app and device names); read as Latin-1 they showed
    as mojibake. Control characters (terminal escapes, bell, NUL) and bidirectional overrides
    are dropped, so a list rendered in a terminal or a page shows what the client is."""
    user = await register(client)
    sent = [
        ("Łódź/1.0 (日本)".encode(), "Łódź/1.0 (日本)"),
        (b"a\x1b[31mred\x07\x7f\x00\x01b", "a[31mredb"),
        ("Chrome \u202eexe.txt".encode(), "Chrome exe.txt"),
        (b"\xff\xfeAgent", "\ufffd\ufffdAgent"),
        (b"x" * 5000, "x" * 255),
    ]
    for agent, _ in sent:
        body = {"email": user.email, "password": PASSWORD}
        data_of(await client.post("/api/v1/auth/login", json=body, headers={b"User-Agent": agent}))
    listed = data_of(await client.get(f"{SESSIONS_PATH}?order=asc", headers=user.headers))
    shown = [row["userAgent"] for row in listed["list"][1:]]
    assert shown == [expected for _, expected in sent]
