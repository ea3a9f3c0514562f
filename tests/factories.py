"""Test data in one place: accounts over HTTP, admins through the service."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import count

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from apiforge.accounts.service import AccountService
from apiforge.accounts.throttle import LoginThrottle
from apiforge.app import create_app, shutdown
from apiforge.core.db import session_scope
from apiforge.core.settings import Settings

PASSWORD = "correct horse battery"
_seq = count(1)


@dataclass
class User:
    email: str
    account_id: str
    workspace_id: str
    access_token: str
    refresh_token: str
    headers: dict[str, str] = field(default_factory=dict)


async def register(client: AsyncClient, email: str | None = None, name: str = "") -> User:
    email = email or f"user{next(_seq)}@example.com"
    response = await client.post(
        "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": name}
    )
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return User(
        email=email,
        account_id=data["accountId"],
        workspace_id=data["workspaceId"],
        access_token=data["accessToken"],
        refresh_token=data["refreshToken"],
        headers={"Authorization": f"Bearer {data['accessToken']}"},
    )


async def make_admin(app: FastAPI, client: AsyncClient, email: str | None = None) -> User:
    email = email or f"admin{next(_seq)}@example.com"
    settings = app.state.settings
    async for session in session_scope(app.state.sessionmaker):
        throttle = LoginThrottle(app.state.limits_storage, 100, 60)
        await AccountService(session, settings, throttle).create_account(
            email, PASSWORD, "Admin", is_admin=True
        )
    response = await client.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    return User(
        email=email,
        account_id=data["accountId"],
        workspace_id=data["workspaceId"],
        access_token=data["accessToken"],
        refresh_token=data["refreshToken"],
        headers={"Authorization": f"Bearer {data['accessToken']}"},
    )


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    """An app of its own on `settings` (another node's caches, a setting changed for one test)
    and a client of it, shut down after."""
    application = create_app(settings)
    transport = ASGITransport(app=application, raise_app_exceptions=False)
    try:
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield application, http
    finally:
        await shutdown(application)
