"""Review of apps' end users: a grant racing a revoke that empties the user's row is stored, not
answered as granted and then lost; a `userRight` grant of no rights leaves no empty row."""

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncEngine

from apiforge.rights.store import RightsKey, grant_rights, held_rights, revoke_rights
from tests.conftest import DATABASE_URL
from tests.e2e._apps import new_api, new_app
from tests.e2e._perms import user_rights
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register

URL = "/api/v1/invocations"


def _path(app_id: str) -> str:
    return f"/api/v1/apps/{app_id}/user-rights"


@pytest.mark.skipif(
    not DATABASE_URL.startswith("postgresql"), reason="SQLite serialises the two writers"
)
async def test_a_grant_racing_a_revoke_of_the_row_is_kept(
    client: AsyncClient, app: FastAPI
) -> None:
    engine: AsyncEngine = app.state.engine
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Rights")
    key = RightsKey(owner.workspace_id, app_id, "alice", "org")
    async with engine.begin() as conn:
        await grant_rights(conn, key, ["read"])

    async def granting() -> list[str]:
        async with engine.begin() as conn:
            return await grant_rights(conn, key, ["write"])

    # The revoke holds the row while the grant finds it there, then deletes it and commits:
    # the grant, waiting on the row's lock, finds no row any more.
    async with engine.connect() as revoker, revoker.begin():
        await held_rights(revoker, key, lock=True)
        grant = asyncio.create_task(granting())
        await asyncio.sleep(0.3)
        assert not grant.done()
        assert await revoke_rights(revoker, key, None) == []

    assert await grant == ["write"]
    async with engine.connect() as conn:
        assert await held_rights(conn, key) == ["write"]


async def test_a_user_right_step_granting_no_rights_leaves_no_empty_row(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Rights")
    granting = {
        "id": "granted",
        "type": "userRight",
        "action": "grant",
        "userId": {"expr": "args.user"},
        "target": "org",
        "rights": {"expr": "args.rights"},
    }
    params = [
        {"name": "user", "type": "string", "required": True, "max": 128},
        {"name": "rights", "type": "array", "default": []},
    ]
    await new_api(client, owner.headers, app_id, "join", params=params, steps=[granting], price=100)

    async def join(user: str, rights: list[str]) -> Any:
        args = {"user": user, "rights": rights}
        body = {"appId": app_id, "api": "join", "version": "dev", "args": args}
        return data_of(await client.post(URL, json=body, headers=owner.headers))["granted"]

    assert await join("alice", []) == []
    assert await user_rights(client, owner.headers, app_id) == []
    revoked = await client.delete(f"{_path(app_id)}?userId=alice&target=org", headers=owner.headers)
    assert_error(revoked, 404, "user_right_not_found")

    # A user who holds rights keeps them, and an empty grant changes nothing.
    assert await join("bob", ["read"]) == ["read"]
    assert await join("bob", []) == ["read"]
    rows = await user_rights(client, owner.headers, app_id)
    assert [(row["userId"], row["rights"]) for row in rows] == [("bob", ["read"])]
