"""Sign-in throttling under concurrency: an attempt is counted before its password is checked,
so a burst cannot get more checks than the limit, per email and per IP; a right password gives
its place back, and a success clears the email's failures."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import update

from apiforge.accounts.models import Account
from apiforge.app import create_app, shutdown
from apiforge.core.db import session_scope
from apiforge.core.settings import Settings
from tests.factories import PASSWORD, register

LOGIN = "/api/v1/auth/login"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The test client's address (127.0.0.1) is a trusted proxy: `X-Forwarded-For` names the
    client, so a test can sign in from several IPs."""
    return settings.model_copy(update={"trusted_proxies": ["127.0.0.1"]})


async def _login(
    client: AsyncClient, email: str, password: str, ip: str = "203.0.113.1"
) -> Response:
    return await client.post(
        LOGIN, json={"email": email, "password": password}, headers={"X-Forwarded-For": ip}
    )


async def _burst(client: AsyncClient, emails: list[str], password: str) -> list[Response]:
    return list(await asyncio.gather(*(_login(client, email, password) for email in emails)))


def _assert_throttled(response: Response, scope: str, limit: int, window: int) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["data"]["error"] == "login_throttled"
    retry = response.headers["Retry-After"]
    assert 0 < int(retry) <= window + 1
    assert (
        response.headers["RateLimit-Policy"]
        == f'"email";q={limit};w={window}, "ip";q={limit};w={window}'
    )
    assert response.headers["RateLimit"] == f'"{scope}";r=0;t={retry}'
    assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert response.headers["X-RateLimit-Reset"] == retry


async def test_a_burst_of_wrong_passwords_gets_no_more_checks_than_the_limit(
    client: AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    limit, window = settings.login_max_failures, settings.login_window_seconds
    responses = await _burst(client, [user.email] * (6 * limit), "wrong-password")
    statuses = [response.status_code for response in responses]
    assert statuses.count(401) == limit, statuses
    assert statuses.count(429) == 5 * limit, statuses
    for response in responses:
        if response.status_code == 429:
            _assert_throttled(response, "email", limit, window)
    # The email is locked for the window, even with the right password and from another IP.
    _assert_throttled(
        await _login(client, user.email, PASSWORD, "198.51.100.7"), "email", limit, window
    )


async def test_a_burst_over_many_emails_from_one_ip_gets_no_more_checks_than_the_limit(
    client: AsyncClient, settings: Settings
) -> None:
    limit, window = settings.login_max_failures, settings.login_window_seconds
    emails = [f"ghost{n}@example.com" for n in range(6 * limit)]
    statuses = [response.status_code for response in await _burst(client, emails, "nope-nope")]
    assert statuses.count(401) == limit, statuses
    assert statuses.count(429) == 5 * limit, statuses
    _assert_throttled(await _login(client, "fresh@example.com", "nope-nope"), "ip", limit, window)


async def test_right_passwords_give_their_place_back_and_a_success_clears_the_email(
    client: AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    limit = settings.login_max_failures
    # Sequential sign-ins from one IP, many more than the limit, are never throttled.
    for _ in range(2 * limit):
        assert (await _login(client, user.email, PASSWORD)).status_code == 200
    # A burst of wrong passwords one short of the limit, then the right one: it signs in...
    wrong = await _burst(client, [user.email] * (limit - 1), "wrong-password")
    assert [response.status_code for response in wrong] == [401] * (limit - 1)
    assert (await _login(client, user.email, PASSWORD)).status_code == 200
    # ...and clears the email's failures (from another IP: this one keeps its own failures).
    for _ in range(limit):
        assert (await _login(client, user.email, "wrong", "198.51.100.7")).status_code == 401
    assert (await _login(client, user.email, PASSWORD, "198.51.100.7")).status_code == 429


async def test_a_disabled_account_with_the_right_password_counts_no_failure(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    user = await register(client)
    async for session in session_scope(app.state.sessionmaker):
        await session.execute(
            update(Account).where(Account.id == user.account_id).values(status="disabled")
        )
    for _ in range(2 * settings.login_max_failures):
        response = await _login(client, user.email, PASSWORD)
        assert response.status_code == 403
        assert response.json()["data"]["error"] == "account_disabled"


@pytest.fixture
async def short_window(settings: Settings) -> AsyncIterator[AsyncClient]:
    """A client of an app whose sign-in window is one second."""
    application = create_app(settings.model_copy(update={"login_window_seconds": 1}))
    transport = ASGITransport(app=application, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
    await shutdown(application)


async def test_the_right_password_signs_in_once_the_window_has_passed(
    short_window: AsyncClient, settings: Settings
) -> None:
    client = short_window
    user = await register(client)
    limit = settings.login_max_failures
    statuses = [r.status_code for r in await _burst(client, [user.email] * 3 * limit, "wrong!")]
    assert statuses.count(401) == limit, statuses
    _assert_throttled(await _login(client, user.email, PASSWORD), "email", limit, 1)
    await asyncio.sleep(1.1)
    assert (await _login(client, user.email, PASSWORD)).status_code == 200
