"""Helpers for console-account tests: bearer headers, sign-in, refresh and password change."""

from httpx import AsyncClient, Response

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
