"""Helpers for the workspace, member and plan flows: teams with given roles, state snapshots."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import delete

from apiforge.gateway.context import GatewayContext
from apiforge.gateway.stages.run import RunStage
from apiforge.workspaces.models import Workspace
from tests.factories import User, register

INJECTION = "'; DROP TABLE accounts; --"
SCRIPT = "<script>alert(1)</script>"


def assert_error(response: Response, status: int, reason: str) -> dict[str, Any]:
    """The response is the error envelope with this status and reason; returns `data`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == status
    assert body["data"]["error"] == reason, body
    data: dict[str, Any] = body["data"]
    return data


def data_of(response: Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 200
    assert body["message"] == "success"
    return body["data"]


async def new_workspace(client: AsyncClient, owner: User, name: str = "Team") -> str:
    response = await client.post("/api/v1/workspaces", json={"name": name}, headers=owner.headers)
    workspace_id: str = data_of(response)["id"]
    return workspace_id


async def add_member(
    client: AsyncClient, actor: User, workspace_id: str, member: User, role: str
) -> None:
    response = await client.post(
        f"/api/v1/workspaces/{workspace_id}/members",
        json={"email": member.email, "role": role},
        headers=actor.headers,
    )
    assert data_of(response) == {"id": member.account_id}


async def team(client: AsyncClient, *roles: str) -> tuple[User, str, dict[str, User]]:
    """An owner, their new workspace, and one fresh member per role given (keyed by role)."""
    owner = await register(client)
    workspace_id = await new_workspace(client, owner)
    members = {}
    for role in roles:
        members[role] = await register(client)
        await add_member(client, owner, workspace_id, members[role], role)
    return owner, workspace_id, members


async def member_roles(client: AsyncClient, user: User, workspace_id: str) -> dict[str, str]:
    """accountId → role, as `user` sees the member list."""
    response = await client.get(
        f"/api/v1/workspaces/{workspace_id}/members?pageSize=100", headers=user.headers
    )
    return {m["accountId"]: m["role"] for m in data_of(response)["list"]}


async def workspaces_of(client: AsyncClient, user: User) -> dict[str, dict[str, Any]]:
    """id → workspace, as listed for `user`."""
    response = await client.get("/api/v1/workspaces?pageSize=100", headers=user.headers)
    return {w["id"]: w for w in data_of(response)["list"]}


async def while_deleting(
    app: FastAPI, model: Any, row_id: str, request: Callable[[], Awaitable[Response]]
) -> Response:
    """`request`, sent while another transaction deletes the row `row_id` of `model` (a
    workspace, say): the request reads the row as still there, then waits on the deleting
    transaction's locks until the deletion commits."""
    async with app.state.engine.connect() as side:
        await side.execute(delete(model).where(model.id == row_id))
        task = asyncio.ensure_future(request())
        await asyncio.sleep(0.5)
        assert not task.done(), task.result().text
        await side.commit()
    return await asyncio.wait_for(task, 30)


async def deleted_before_steps(
    app: FastAPI,
    monkeypatch: pytest.MonkeyPatch,
    row_id: str,
    call: Callable[[], Awaitable[Response]],
    model: Any = Workspace,
) -> Response:
    """`call`, during which the row `row_id` of `model` (its workspace, its app) is deleted (by
    another transaction, committed) once the call was admitted and its price reserved, right
    before its steps run."""
    run = RunStage.on_request
    armed = [True]

    async def deleting_run(self: RunStage, ctx: GatewayContext) -> None:
        if armed:
            armed.clear()
            async with app.state.engine.begin() as side:
                await side.execute(delete(model).where(model.id == row_id))
        await run(self, ctx)

    monkeypatch.setattr(RunStage, "on_request", deleting_run)
    response = await asyncio.wait_for(call(), 30)
    assert not armed  # the deletion did run inside the call
    return response
