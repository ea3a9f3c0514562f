"""Review fixes for sign-in: a right password is never refused because the account's profile
changed while argon2 was checking it."""

import asyncio
import threading
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.accounts import passwords, service
from apiforge.accounts.models import Account
from apiforge.core.db import session_scope
from tests.factories import PASSWORD, register

Pause = tuple[threading.Event, threading.Event]


@pytest.fixture
def paused_verification(monkeypatch: pytest.MonkeyPatch) -> Iterator[Pause]:
    """(entered, release): sign-in's password check (in a worker thread) sets `entered`, then
    waits for `release`."""
    entered, release = threading.Event(), threading.Event()
    verify = passwords.check_console_password

    def paused(password_hash: str | None, password: str) -> passwords.Verdict:
        entered.set()
        release.wait(timeout=10)
        return verify(password_hash, password)

    monkeypatch.setattr(service, "check_console_password", paused)  # what sign-in calls
    yield entered, release
    release.set()


async def _account(app: FastAPI, account_id: str) -> Account:
    async for session in session_scope(app.state.sessionmaker):
        account = await session.get(Account, account_id)
        assert account is not None
        return account
    raise AssertionError


async def test_a_profile_edit_during_sign_in_does_not_refuse_the_right_password(
    app: FastAPI, client: AsyncClient, paused_verification: Pause
) -> None:
    entered, release = paused_verification
    user = await register(client, name="Ada")
    body = {"email": user.email, "password": PASSWORD}
    login = asyncio.create_task(client.post("/api/v1/auth/login", json=body))
    assert await asyncio.to_thread(entered.wait, 10)  # sign-in has read the account
    edit = await client.patch("/api/v1/user/profile", json={"name": "Bea"}, headers=user.headers)
    assert edit.status_code == 200, edit.text
    release.set()
    response = await login
    assert response.status_code == 200, response.text
    account = await _account(app, user.account_id)
    assert (account.name, account.version) == ("Bea", 2)
    assert account.last_login_at is not None


async def test_sign_in_rehashes_a_password_hashed_with_older_parameters(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    old_hash = (await _account(app, user.account_id)).password_hash
    settings = app.state.settings
    passwords.configure(settings.password_time_cost + 1, settings.password_memory_kib, 1)
    try:
        body = {"email": user.email, "password": PASSWORD}
        assert (await client.post("/api/v1/auth/login", json=body)).status_code == 200
        account = await _account(app, user.account_id)
        assert account.password_hash != old_hash
        assert f"t={settings.password_time_cost + 1}," in account.password_hash
        assert account.version == 1  # not a change of the profile
        assert (await client.post("/api/v1/auth/login", json=body)).status_code == 200
    finally:
        passwords.configure(
            settings.password_time_cost,
            settings.password_memory_kib,
            settings.password_parallelism,
        )


async def test_a_rehash_never_overwrites_a_password_changed_during_sign_in(
    app: FastAPI, client: AsyncClient, paused_verification: Pause
) -> None:
    entered, release = paused_verification
    user = await register(client)
    settings = app.state.settings
    passwords.configure(settings.password_time_cost + 1, settings.password_memory_kib, 1)
    try:
        body = {"email": user.email, "password": PASSWORD}
        login = asyncio.create_task(client.post("/api/v1/auth/login", json=body))
        assert await asyncio.to_thread(entered.wait, 10)  # sign-in has read the old hash
        changed = await asyncio.to_thread(passwords.hash_password, "a-new-password-1")
        async for session in session_scope(app.state.sessionmaker):
            account = await session.get(Account, user.account_id)
            assert account is not None
            account.password_hash = changed
            await session.commit()
        release.set()
        # The old password was right when checked, but a password change ends every other
        # session: a sign-in with the old one must not start a new one (docs/decisions.md).
        refused = await login
        assert refused.status_code == 401, refused.text
        assert refused.json()["data"]["error"] == "invalid_credentials"
        assert (await _account(app, user.account_id)).password_hash == changed
    finally:
        passwords.configure(
            settings.password_time_cost,
            settings.password_memory_kib,
            settings.password_parallelism,
        )
