"""Console sign-in: registration, login throttling, refresh rotation and reuse, logout."""

import asyncio
import base64

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from apiforge.accounts.models import Account, LoginSession
from apiforge.core.db import session_scope
from apiforge.workspaces.models import Membership, Workspace
from tests.factories import PASSWORD, register


async def _count(app: FastAPI, model: type) -> int:
    async for session in session_scope(app.state.sessionmaker):
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)
    raise AssertionError


async def test_register_creates_account_and_personal_workspace(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client, "Ada@Example.com", name="Ada")
    assert user.workspace_id
    async for session in session_scope(app.state.sessionmaker):
        account = await session.get(Account, user.account_id)
        assert account is not None
        assert account.email == "ada@example.com"
        assert account.password_hash.startswith("$argon2id$")
        workspace = await session.get(Workspace, user.workspace_id)
        assert workspace is not None
        assert workspace.personal
        role = await session.scalar(
            select(Membership.role).where(Membership.workspace_id == workspace.id)
        )
        assert role == "owner"


async def test_duplicate_email_is_409_case_insensitive(app: FastAPI, client: AsyncClient) -> None:
    await register(client, "bob@example.com")
    response = await client.post(
        "/api/v1/auth/register", json={"email": "BOB@example.com", "password": PASSWORD}
    )
    assert response.status_code == 409
    assert response.json()["data"]["error"] == "email_taken"
    assert await _count(app, Account) == 1


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "a@example.com", "password": "short"},
        {"email": "a@example.com", "password": PASSWORD, "isAdmin": 1},
        {"email": "a@example.com", "password": 12345678},
        {"email": "'; DROP TABLE accounts; --@x.com", "password": PASSWORD},
        {"email": "a@example.com"},
        {"email": "a@example.com", "password": "x" * 10_000},
    ],
)
async def test_bad_registration_changes_nothing(
    app: FastAPI, client: AsyncClient, body: dict[str, object]
) -> None:
    response = await client.post("/api/v1/auth/register", json=body)
    assert response.status_code == 400
    assert response.json()["data"]["errors"]
    assert await _count(app, Account) == 0
    assert await _count(app, Workspace) == 0


async def test_login_and_wrong_password(client: AsyncClient) -> None:
    user = await register(client)
    good = await client.post(
        "/api/v1/auth/login", json={"email": user.email.upper(), "password": PASSWORD}
    )
    assert good.status_code == 200
    assert good.json()["data"]["expiresIn"] > 0
    bad = await client.post("/api/v1/auth/login", json={"email": user.email, "password": "nope"})
    assert bad.status_code == 401
    assert bad.json()["data"]["error"] == "invalid_credentials"
    unknown = await client.post(
        "/api/v1/auth/login", json={"email": "ghost@example.com", "password": PASSWORD}
    )
    assert unknown.status_code == 401
    assert unknown.json()["data"]["error"] == "invalid_credentials"


async def test_failed_logins_are_throttled(client: AsyncClient, settings: object) -> None:
    user = await register(client)
    for _ in range(5):
        response = await client.post(
            "/api/v1/auth/login", json={"email": user.email, "password": "wrong-password"}
        )
        assert response.status_code == 401
    blocked = await client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    assert blocked.status_code == 429
    assert blocked.json()["data"]["error"] == "login_throttled"
    assert int(blocked.headers["Retry-After"]) > 0


async def test_access_token_required_and_verified(client: AsyncClient) -> None:
    user = await register(client)
    missing = await client.get("/api/v1/user/profile")
    assert missing.status_code == 401
    assert missing.json()["data"]["error"] == "unauthenticated"
    tampered = user.access_token[:-3] + ("abc" if user.access_token[-3:] != "abc" else "xyz")
    for header in (
        f"Bearer {tampered}",
        "Bearer not.a.jwt",
        "Basic abc",
        f"Token {user.access_token}",
    ):
        response = await client.get("/api/v1/user/profile", headers={"Authorization": header})
        assert response.status_code == 401, header


async def test_alg_none_token_is_refused(client: AsyncClient) -> None:
    user = await register(client)
    payload = user.access_token.split(".")[1]
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    for forged in (f"{header}.{payload}.", f"{header}.{payload}"):
        response = await client.get(
            "/api/v1/user/profile", headers={"Authorization": f"Bearer {forged}"}
        )
        assert response.status_code == 401


async def test_refresh_rotates_and_old_token_is_spent(client: AsyncClient) -> None:
    user = await register(client)
    first = await client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
    assert first.status_code == 200
    pair = first.json()["data"]
    assert pair["refreshToken"] != user.refresh_token
    profile = await client.get(
        "/api/v1/user/profile", headers={"Authorization": f"Bearer {pair['accessToken']}"}
    )
    assert profile.status_code == 200


async def test_refresh_token_reuse_revokes_the_family(app: FastAPI, client: AsyncClient) -> None:
    user = await register(client)
    rotated = await client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
    newer = rotated.json()["data"]
    replay = await client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
    assert replay.status_code == 401
    assert replay.json()["data"]["error"] == "refresh_token_reused"
    # The whole family is dead: the newer refresh token and every access token of the session.
    after = await client.post("/api/v1/auth/refresh", json={"refreshToken": newer["refreshToken"]})
    assert after.status_code == 401
    assert after.json()["data"]["error"] == "session_revoked"
    for token in (user.access_token, newer["accessToken"]):
        response = await client.get(
            "/api/v1/user/profile", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401
    async for session in session_scope(app.state.sessionmaker):
        revoked = await session.scalar(select(LoginSession.revoked_reason))
        assert revoked == "refresh_reuse"


async def test_concurrent_refreshes_with_one_token_let_at_most_one_win(client: AsyncClient) -> None:
    user = await register(client)
    responses = await asyncio.gather(
        *[
            client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
            for _ in range(5)
        ]
    )
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) <= 1
    assert all(r.status_code in (200, 401) for r in responses)


async def test_unknown_refresh_token_is_401(client: AsyncClient) -> None:
    response = await client.post("/api/v1/auth/refresh", json={"refreshToken": "rt_nothing"})
    assert response.status_code == 401
    assert response.json()["data"]["error"] == "invalid_refresh_token"


async def test_logout_ends_session_tokens(client: AsyncClient) -> None:
    user = await register(client)
    other = await client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    other_token = other.json()["data"]["accessToken"]
    response = await client.post("/api/v1/auth/logout", headers=user.headers)
    assert response.status_code == 200
    assert (await client.get("/api/v1/user/profile", headers=user.headers)).status_code == 401
    refresh = await client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
    assert refresh.status_code == 401
    # Another session of the same account is unaffected.
    still = await client.get(
        "/api/v1/user/profile", headers={"Authorization": f"Bearer {other_token}"}
    )
    assert still.status_code == 200


async def test_profile_update_allows_only_own_fields(client: AsyncClient) -> None:
    user = await register(client, name="Old")
    response = await client.patch(
        "/api/v1/user/profile",
        headers=user.headers,
        json={"name": "<script>alert(1)</script>", "locale": "zh-CN"},
    )
    assert response.status_code == 200
    assert response.json()["data"]["name"] == "<script>alert(1)</script>"
    assert response.json()["data"]["locale"] == "zh-CN"
    for body in ({"email": "x@example.com"}, {"isAdmin": 1}, {"status": "disabled"}):
        refused = await client.patch("/api/v1/user/profile", headers=user.headers, json=body)
        assert refused.status_code == 400
    bad = await client.patch(
        "/api/v1/user/profile", headers=user.headers, json={"avatarUrl": "javascript:alert(1)"}
    )
    assert bad.status_code == 400
    profile = (await client.get("/api/v1/user/profile", headers=user.headers)).json()["data"]
    assert profile["email"] == user.email
    assert profile["isAdmin"] == 0
    assert profile["status"] == "active"
    assert profile["avatarUrl"] == ""


async def test_profile_patch_via_method_override(client: AsyncClient) -> None:
    user = await register(client)
    response = await client.post(
        "/api/v1/user/profile",
        headers={**user.headers, "X-HTTP-Method-Override": "PATCH"},
        json={"name": "Overridden"},
    )
    assert response.status_code == 200
    assert response.json()["data"]["name"] == "Overridden"
