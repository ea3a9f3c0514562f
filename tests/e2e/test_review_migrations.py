"""Going down the migration history and back up on a database that holds data keeps every row:
on SQLite a downgrade that drops a column rebuilds the table (copy, drop, rename), and the drop
must not cascade into the tables that reference it."""

import asyncio

from alembic import command
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import text

from apiforge.core.settings import Settings
from apiforge.migrate import alembic_config
from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._workspaces import data_of, new_workspace
from tests.factories import register

# Tables that exist at 0007 and reference one that a downgrade to it rebuilds (0016: app
# versions; 0014: login sessions; 0008: accounts, apps, APIs, keys, workspaces...).
KEPT = (
    "accounts",
    "workspaces",
    "workspace_members",
    "login_sessions",
    "refresh_tokens",
    "apps",
    "app_apis",
    "app_versions",
)


async def _counts(app: FastAPI) -> dict[str, int]:
    async with app.state.engine.connect() as connection:
        counts = {}
        for table in KEPT:
            found = await connection.scalar(text(f"SELECT count(*) FROM {table}"))  # noqa: S608 - KEPT
            counts[table] = int(found or 0)
        return counts


async def test_a_downgrade_and_upgrade_keep_accounts_sessions_and_apps(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    """Downgrading to 0007 on SQLite used to delete every refresh token (0014: everyone signed
    out) and every workspace, membership, app and version (0008 rebuilt `accounts`)."""
    user = await register(client)
    team = await new_workspace(client, user, "Team")
    app_id = await new_app(client, user.headers, "Kept")
    await new_api(client, user.headers, app_id, "hello", steps=[set_step("hi", "hi")])
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=user.headers
    )
    version = data_of(published)["version"]
    before = await _counts(app)
    assert all(before.values()), before

    config = alembic_config(settings.resolved_database_url)
    await asyncio.to_thread(command.downgrade, config, "0007")
    await asyncio.to_thread(command.upgrade, config, "head")

    assert await _counts(app) == before
    refreshed = await client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
    headers = {"Authorization": f"Bearer {data_of(refreshed)['accessToken']}"}
    listed = data_of(await client.get("/api/v1/workspaces", headers=headers))
    assert {w["id"] for w in listed["list"]} == {user.workspace_id, team}
    versions = data_of(await client.get(f"/api/v1/apps/{app_id}/versions", headers=headers))
    assert [v["version"] for v in versions["list"]] == [version]
