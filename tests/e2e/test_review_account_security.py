"""Review of console account security: the count of sessions a password change ends is of the
sessions that could still be used (those `/user/sessions` lists), a right password is never
refused because a sign-in running alongside rehashed it, and the loser of two password changes
from two sessions is told its session is over."""

import asyncio
import threading
from collections.abc import Callable
from datetime import timedelta

import jwt
import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import update

import apiforge.accounts.service as account_service
from apiforge.accounts import passwords
from apiforge.accounts.models import Account, LoginSession, RefreshToken
from apiforge.accounts.passwords import Verdict, hash_password, verify_password
from apiforge.core.db import session_scope
from apiforge.tools.clock import utcnow
from tests.e2e._accounts import SESSIONS_PATH, bearer, change_password, login, stored_hash
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import PASSWORD, register

DECOMPOSED = "Ade\u0301la's pa\u0301ssword"  # a hash of this form predates normalisation
COMPOSED = "Ad\u00e9la's p\u00e1ssword"


def _sid(token: str) -> str:
    sid: str = jwt.decode(token, options={"verify_signature": False})["sid"]
    return sid


async def _set_hash(app: FastAPI, account_id: str, password_hash: str) -> None:
    async for session in session_scope(app.state.sessionmaker):
        await session.execute(
            update(Account).where(Account.id == account_id).values(password_hash=password_hash)
        )


@pytest.fixture
def side_by_side(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Arms a barrier of two on the password check (run in a thread): the next two requests
    both check the password as it was before either writes."""

    def arm() -> None:
        barrier = threading.Barrier(2)
        check = passwords.check_console_password

        def together(stored: str | None, password: str) -> Verdict:
            verdict = check(stored, password)
            barrier.wait(10)
            monkeypatch.setattr(account_service, "check_console_password", check)
            return verdict

        monkeypatch.setattr(account_service, "check_console_password", together)

    return arm


# --- what a password change reports ------------------------------------------------------------


async def test_ended_sessions_counts_only_sessions_that_could_still_be_used(
    app: FastAPI, client: AsyncClient
) -> None:
    """Every sign-in is a session row that stays unrevoked after it expires (no logout): the
    count included every one of them since the account began, telling a user who saw one
    other session in the list that dozens were just ended."""
    user = await register(client)
    phone = data_of(await login(client, user.email))
    expired, stale = [data_of(await login(client, user.email)) for _ in range(2)]
    async for session in session_scope(app.state.sessionmaker):
        # One past its maximum lifetime, one whose refresh token ran out.
        old = utcnow() - timedelta(days=app.state.settings.session_max_days + 1)
        await session.execute(
            update(LoginSession)
            .where(LoginSession.id == _sid(expired["accessToken"]))
            .values(created_at=old)
        )
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.session_id == _sid(stale["accessToken"]))
            .values(expires_at=utcnow())
        )
    listed = data_of(await client.get(SESSIONS_PATH, headers=user.headers))
    assert listed["totalCount"] == 2  # this one and the phone's
    changed = data_of(await change_password(client, user.access_token))
    assert changed == {"id": user.account_id, "endedSessions": 1}
    # The dead ones are ended all the same: nothing of them works any more.
    for ended in (phone, expired, stale):
        response = await client.get("/api/v1/user/profile", headers=bearer(ended["accessToken"]))
        assert_error(response, 401, "session_revoked")
    data_of(await client.get("/api/v1/user/profile", headers=user.headers))


# --- a rehash is no change of the password --------------------------------------------------


def _both_ok(responses: tuple[Response, Response]) -> None:
    for response in responses:
        assert response.status_code == 200, response.text


async def test_two_sign_ins_that_both_rehash_a_legacy_hash_both_sign_in(
    app: FastAPI, client: AsyncClient, side_by_side: Callable[[], None]
) -> None:
    """Both checked the hash made before normalisation; the first rehashed it, and the second,
    finding the hash changed, took the password for changed and refused the right one (401
    `invalid_credentials`): two devices or a client signing in twice at once after the upgrade."""
    user = await register(client)
    await _set_hash(app, user.account_id, hash_password(DECOMPOSED))
    side_by_side()
    _both_ok(
        await asyncio.gather(
            login(client, user.email, DECOMPOSED), login(client, user.email, DECOMPOSED)
        )
    )
    assert verify_password(await stored_hash(app, user.account_id), COMPOSED)


async def test_a_password_change_beside_a_sign_in_that_rehashes_goes_through(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sign-in rehashed the legacy hash (same password, new hash) while the change checked the
    old one: the change was refused as 409 `password_changed_meanwhile` though nobody changed
    the password. Now it lands, and it ends the session that sign-in started."""
    user = await register(client)
    await _set_hash(app, user.account_id, hash_password(DECOMPOSED))
    checked, go_on = threading.Event(), threading.Event()
    check = passwords.check_console_password

    def change_waits(stored: str | None, password: str) -> Verdict:
        verdict = check(stored, password)
        if not checked.is_set():  # the change's check; the sign-in's runs through
            checked.set()
            assert go_on.wait(10)
        return verdict

    monkeypatch.setattr(account_service, "check_console_password", change_waits)
    new = "a brand new one"
    changing = asyncio.create_task(
        change_password(client, user.access_token, current=DECOMPOSED, new=new)
    )
    assert await asyncio.to_thread(checked.wait, 10)
    signed_in = data_of(await login(client, user.email, DECOMPOSED))
    assert verify_password(await stored_hash(app, user.account_id), COMPOSED)  # rehashed
    go_on.set()
    assert data_of(await changing)["endedSessions"] == 1
    profile = await client.get("/api/v1/user/profile", headers=bearer(signed_in["accessToken"]))
    assert_error(profile, 401, "session_revoked")
    data_of(await login(client, user.email, new))
    assert_error(await login(client, user.email, COMPOSED), 401, "invalid_credentials")


# --- two changes at once -------------------------------------------------------------------


async def test_the_loser_of_two_changes_from_two_sessions_is_told_its_session_ended(
    app: FastAPI, client: AsyncClient, side_by_side: Callable[[], None]
) -> None:
    """The winner's change ended the loser's session while the loser checked the password:
    docs/accounts.md answers that with 401 `session_revoked` (sign in again), not a 409 that
    invites a retry which then fails as a 401 anyway."""
    user = await register(client)
    other = data_of(await login(client, user.email))
    side_by_side()
    first, second = await asyncio.gather(
        change_password(client, user.access_token, new="first new password"),
        change_password(client, other["accessToken"], new="second new password"),
    )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 401], (first.text, second.text)
    winner, loser = (first, second) if first.status_code == 200 else (second, first)
    assert_error(loser, 401, "session_revoked")
    new = "first new password" if winner is first else "second new password"
    data_of(await login(client, user.email, new))
    assert_error(await login(client, user.email, PASSWORD), 401, "invalid_credentials")


async def test_two_changes_from_one_session_are_one_change_and_a_409(
    app: FastAPI, client: AsyncClient, side_by_side: Callable[[], None]
) -> None:
    """Pinned: the same session (still live) racing itself keeps the documented 409."""
    user = await register(client)
    side_by_side()
    responses = await asyncio.gather(
        change_password(client, user.access_token, new="first new password"),
        change_password(client, user.access_token, new="second new password"),
    )
    assert sorted(r.status_code for r in responses) == [200, 409]
    loser = next(r for r in responses if r.status_code == 409)
    assert_error(loser, 409, "password_changed_meanwhile")
    data_of(await client.get("/api/v1/user/profile", headers=user.headers))
