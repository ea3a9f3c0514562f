"""Review fixes for accounts: NUL characters are a 400 on every backend (PostgreSQL cannot store
them: they were 500s there), and concurrent sign-ups of one email are 409, never 500."""

import asyncio

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from apiforge.accounts.models import Account
from apiforge.core.db import session_scope
from tests.factories import PASSWORD, register


async def _accounts(app: FastAPI) -> int:
    async for session in session_scope(app.state.sessionmaker):
        return int(await session.scalar(select(func.count()).select_from(Account)) or 0)
    raise AssertionError


def _refused(response: object, field: str) -> None:
    assert response.status_code == 400, response.text  # type: ignore[attr-defined]
    data = response.json()["data"]  # type: ignore[attr-defined]
    assert data["error"] == "invalid_input"
    assert [e["field"] for e in data["errors"]] == [field]


async def test_a_nul_in_a_new_accounts_name_is_400_and_creates_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    body = {"email": "nul@example.com", "password": PASSWORD, "name": "a\x00b"}
    _refused(await client.post("/api/v1/auth/register", json=body), "name")
    assert await _accounts(app) == 0


async def test_a_nul_in_the_sign_in_email_is_400(client: AsyncClient) -> None:
    user = await register(client)
    body = {"email": user.email + "\x00", "password": PASSWORD}
    _refused(await client.post("/api/v1/auth/login", json=body), "email")


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": "a\x00b"}, "name"), ({"avatarUrl": "https://x.example/a\x00.png"}, "avatarUrl")],
)
async def test_a_nul_in_the_profile_is_400_and_changes_nothing(
    client: AsyncClient, body: dict[str, str], field: str
) -> None:
    user = await register(client, name="Ada")
    _refused(await client.patch("/api/v1/user/profile", json=body, headers=user.headers), field)
    profile = (await client.get("/api/v1/user/profile", headers=user.headers)).json()["data"]
    assert (profile["name"], profile["avatarUrl"], profile["version"]) == ("Ada", "", 1)


async def test_concurrent_sign_ups_of_one_email_are_one_account_and_409s(
    app: FastAPI, client: AsyncClient
) -> None:
    body = {"email": "race@example.com", "password": PASSWORD}
    responses = await asyncio.gather(
        *(client.post("/api/v1/auth/register", json=body) for _ in range(6))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] + [409] * 5, [r.text for r in responses]
    assert all(r.json()["data"]["error"] == "email_taken" for r in responses if r.is_error)
    assert await _accounts(app) == 1
