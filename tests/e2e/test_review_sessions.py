"""Review of console sessions: concurrent refreshes leave exactly one working pair (a replay still
ends the session), sign-in finds an account by the address typed at sign-up, access tokens with
malformed ids are 401s, and the wrong kind of token is refused on the management API and on the
gateway, where an ended session or a disabled account stops at once."""

import asyncio
import itertools
import time
from typing import Any

import jwt
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.accounts.models import Account, LoginSession, RefreshToken
from apiforge.accounts.service import AccountService
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import PASSWORD, make_admin, register

RACERS = 3


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _refresh(client: AsyncClient, token: str) -> Any:
    return await client.post("/api/v1/auth/refresh", json={"refreshToken": token})


async def _invoke(client: AsyncClient, token: str, app_id: str) -> Any:
    """The builder calling its own app with a console access token."""
    body = {"appId": app_id, "api": "echo", "version": "latest", "args": {"text": "hi"}}
    return await client.post("/api/v1/invocations", json=body, headers=_bearer(token))


@pytest.fixture
def reads_together(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first `RACERS` refreshes each wait, after reading their token, until all of them have
    read it: the requests overlap for certain instead of by luck of scheduling. Later refreshes
    run as usual."""
    barrier = asyncio.Barrier(RACERS)
    started = itertools.count()
    presented = AccountService._presented

    async def together(
        self: AccountService, token: str
    ) -> tuple[RefreshToken, LoginSession, Account] | None:
        found = await presented(self, token)
        if next(started) < RACERS:
            async with asyncio.timeout(10):
                await barrier.wait()
        return found

    monkeypatch.setattr(AccountService, "_presented", together)


# --- refresh rotation ---------------------------------------------------------------------------


async def test_concurrent_refreshes_with_one_token_leave_exactly_one_working_pair(
    client: AsyncClient, reads_together: None
) -> None:
    user = await register(client)
    responses = await asyncio.gather(*(_refresh(client, user.refresh_token) for _ in range(RACERS)))
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1, [r.text for r in responses]
    for loser in responses:
        if loser.status_code != 200:
            assert_error(loser, 401, "refresh_token_spent")
    # The winner's pair works: the losers did not take the session down with them.
    pair = winners[0].json()["data"]
    data_of(await client.get("/api/v1/user/profile", headers=_bearer(pair["accessToken"])))
    data_of(await client.get("/api/v1/user/profile", headers=user.headers))


async def test_a_token_replayed_after_a_concurrent_refresh_still_ends_the_session(
    client: AsyncClient, reads_together: None
) -> None:
    user = await register(client)
    responses = await asyncio.gather(*(_refresh(client, user.refresh_token) for _ in range(RACERS)))
    (pair,) = [r.json()["data"] for r in responses if r.status_code == 200]
    replay = await client.post(
        "/api/v1/auth/refresh", json={"refreshToken": user.refresh_token}
    )  # after the race: a stolen copy, not a racing tab
    assert_error(replay, 401, "refresh_token_reused")
    assert_error(await _refresh(client, pair["refreshToken"]), 401, "session_revoked")
    refused = await client.get("/api/v1/user/profile", headers=_bearer(pair["accessToken"]))
    assert_error(refused, 401, "session_revoked")


async def test_tokens_of_one_kind_are_refused_as_the_other(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    owner_app = await notes_app(client, user)
    _, secret = await app_key(client, user, owner_app)
    end_user = data_of(await call(client, secret, owner_app, "signIn", {"user": "ada"}))
    end_user_token = end_user["session"]["token"]
    # A refresh token, or an app's end-user token, is no console access token ...
    for token in (user.refresh_token, end_user_token):
        assert_error(
            await client.get("/api/v1/user/profile", headers=_bearer(token)), 401, "invalid_token"
        )
        assert_error(await _invoke(client, token, owner_app), 401, "invalid_token")
    # ... and an access token is no refresh token (longer than any: refused as input).
    assert_error(await _refresh(client, user.access_token), 400, "invalid_input")
    # Signed with the platform's key but for another audience (or none): refused.
    claims = jwt.decode(user.access_token, options={"verify_signature": False})
    key = app.state.settings.signing_key
    for changed in ({"aud": owner_app}, {"aud": None}, {"iss": "elsewhere"}):
        forged = jwt.encode(
            {k: v for k, v in {**claims, **changed}.items() if v is not None}, key, "HS256"
        )
        refused = await client.get("/api/v1/user/profile", headers=_bearer(forged))
        assert_error(refused, 401, "invalid_token")


# --- access token claims --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "claim", [{"sid": ["x"]}, {"sid": {"a": 1}}, {"sub": ["x"]}, {"sid": 7}, {"sid": True}]
)
async def test_access_tokens_with_ids_that_are_not_strings_are_401(
    app: FastAPI, client: AsyncClient, claim: dict[str, Any]
) -> None:
    """Minted with the right key (another tool sharing `APIFORGE_SECRET_KEY`): a 401, never a
    500 from binding a list as an SQL parameter."""
    user = await register(client)
    owner_app = await notes_app(client, user)
    claims = jwt.decode(user.access_token, options={"verify_signature": False})
    token = jwt.encode({**claims, **claim}, app.state.settings.signing_key, "HS256")
    refused = await client.get("/api/v1/user/profile", headers=_bearer(token))
    assert_error(refused, 401, "invalid_token")
    assert_error(await _invoke(client, token, owner_app), 401, "invalid_token")


async def test_issued_at_may_run_a_minute_ahead_and_expiry_is_exact(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    claims = jwt.decode(user.access_token, options={"verify_signature": False})
    key = app.state.settings.signing_key
    now = int(time.time())

    def token(**changed: int) -> dict[str, str]:
        return _bearer(jwt.encode({**claims, **changed}, key, "HS256"))

    data_of(await client.get("/api/v1/user/profile", headers=token(iat=now + 30)))
    too_early = await client.get("/api/v1/user/profile", headers=token(iat=now + 120))
    assert_error(too_early, 401, "invalid_token")
    expired = await client.get("/api/v1/user/profile", headers=token(iat=now - 60, exp=now))
    assert_error(expired, 401, "token_expired")


# --- sign-in by the address typed at sign-up ----------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("Ade\u0301la@example.com", "adéla@example.com"),  # a decomposed accent (macOS input)
        ("ada@xn--bcher-kva.de", "ada@bücher.de"),  # the domain in its ASCII (IDNA) form
        (
            "ada@\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25.com",
            "ada@example.com",
        ),  # full-width letters (CJK input)
    ],
)
async def test_sign_in_finds_the_account_by_the_address_typed_at_sign_up(
    app: FastAPI, client: AsyncClient, typed: str, stored: str
) -> None:
    user = await register(client, typed)
    profile = data_of(await client.get("/api/v1/user/profile", headers=user.headers))
    assert profile["email"] == stored
    for email in (typed, stored, stored.upper()):
        response = await client.post(
            "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
        )
        assert data_of(response)["accountId"] == user.account_id, email
    again = await client.post("/api/v1/auth/register", json={"email": stored, "password": PASSWORD})
    assert_error(again, 409, "email_taken")


# --- the gateway stops an ended session at once -------------------------------------------------


async def test_console_tokens_stop_on_the_gateway_at_logout_disabling_and_deletion(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    owner_app = await notes_app(client, user)
    data_of(await _invoke(client, user.access_token, owner_app))

    data_of(await client.post("/api/v1/auth/logout", headers=user.headers))
    assert_error(await _invoke(client, user.access_token, owner_app), 401, "session_revoked")

    second = data_of(
        await client.post("/api/v1/auth/login", json={"email": user.email, "password": PASSWORD})
    )
    data_of(await _invoke(client, second["accessToken"], owner_app))
    disabled = await client.patch(
        f"/api/v1/admin/users/{user.account_id}", json={"status": "disabled"}, headers=admin.headers
    )
    data_of(disabled)
    # The reason the management API gives too: signing in again would not help.
    assert_error(await _invoke(client, second["accessToken"], owner_app), 401, "account_disabled")

    data_of(
        await client.delete(
            f"/api/v1/admin/users/{user.account_id}?force=true", headers=admin.headers
        )
    )
    back = await register(client, user.email)  # the same address, a new account
    assert back.account_id != user.account_id
    for token in (user.access_token, second["accessToken"]):
        assert_error(
            await client.get("/api/v1/user/profile", headers=_bearer(token)), 401, "session_revoked"
        )
    assert_error(await _refresh(client, second["refreshToken"]), 401, "invalid_refresh_token")
