"""Helpers for console-account tests: bearer headers, sign-in, refresh and password change."""

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select

from apiforge.accounts.models import Account
from apiforge.core.db import session_scope
from tests.factories import PASSWORD

NEW_PASSWORD = "new horse battery staple"
PASSWORD_PATH = "/api/v1/user/password"
SESSIONS_PATH = "/api/v1/user/sessions"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def login(
    client: AsyncClient, email: str, password: str = PASSWORD, agent: str = "test-agent"
) -> Response:
    body = {"email": email, "password": password}
    return await client.post("/api/v1/auth/login", json=body, headers={"User-Agent": agent})


async def change_password(
    client: AsyncClient, token: str, current: str = PASSWORD, new: str = NEW_PASSWORD
) -> Response:
    body = {"currentPassword": current, "newPassword": new}
    return await client.post(PASSWORD_PATH, json=body, headers=bearer(token))


async def refresh(client: AsyncClient, token: str) -> Response:
    return await client.post("/api/v1/auth/refresh", json={"refreshToken": token})


async def stored_hash(app: FastAPI, account_id: str) -> str:
    """The account's password hash as stored."""
    async for session in session_scope(app.state.sessionmaker):
        stored = await session.scalar(select(Account.password_hash).where(Account.id == account_id))
        assert stored is not None
        return stored
    raise AssertionError
