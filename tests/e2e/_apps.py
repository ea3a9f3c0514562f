"""Helpers for the builder flows: apps and APIs over HTTP, in a chosen workspace."""

from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from apiforge.builder.models import App
from apiforge.builder.signing import open_signing_secret
from tests.e2e._workspaces import data_of
from tests.factories import User


def in_workspace(user: User, workspace_id: str) -> dict[str, str]:
    """`user`'s headers acting in `workspace_id` (X-Workspace-Id)."""
    return {**user.headers, "X-Workspace-Id": workspace_id}


async def new_app(
    client: AsyncClient,
    headers: dict[str, str],
    name: str = "Blog",
    **fields: Any,
) -> str:
    response = await client.post("/api/v1/apps", json={"name": name, **fields}, headers=headers)
    app_id: str = data_of(response)["id"]
    return app_id


def set_step(step_id: str, value: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "value": value}


async def new_api(
    client: AsyncClient, headers: dict[str, str], app_id: str, api: str, **fields: Any
) -> str:
    body = {"api": api, **fields}
    response = await client.post(f"/api/v1/apps/{app_id}/apis", json=body, headers=headers)
    api_id: str = data_of(response)["id"]
    return api_id


async def apis_of(client: AsyncClient, headers: dict[str, str], app_id: str) -> dict[str, Any]:
    """api name -> full API as `GET /apis/{id}` shows it (every page)."""
    page = data_of(await client.get(f"/api/v1/apps/{app_id}/apis?pageSize=100", headers=headers))
    result = {}
    for item in page["list"]:
        full = data_of(
            await client.get(f"/api/v1/apps/{app_id}/apis/{item['id']}", headers=headers)
        )
        result[item["api"]] = full
    return result


async def app_state(client: AsyncClient, headers: dict[str, str], app_id: str) -> dict[str, Any]:
    """Everything a test compares to show nothing changed: the app, its APIs and versions."""
    app = data_of(await client.get(f"/api/v1/apps/{app_id}", headers=headers))
    app.pop("updatedTime")
    versions = data_of(
        await client.get(f"/api/v1/apps/{app_id}/versions?pageSize=100", headers=headers)
    )
    return {"app": app, "apis": await apis_of(client, headers, app_id), "versions": versions}


async def signing_secret(app: FastAPI, app_id: str) -> str:
    """The app's jwtSign secret, read from the database (never returned over HTTP) and opened
    (sealed at rest): what tests need to verify or forge end-user tokens."""
    async with app.state.engine.connect() as conn:
        stored = await conn.scalar(select(App.signing_secret).where(App.id == app_id))
    assert isinstance(stored, str)
    return open_signing_secret(app.state.settings, stored)
