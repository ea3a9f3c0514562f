"""Deleting a workspace (or the account owning it) is final, so its files' bytes go too, once the
deletion has committed; a deletion that rolls back keeps them, and other workspaces' stay."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.core.errors import ConflictError
from apiforge.core.settings import Settings
from apiforge.files.storage import DELETED
from apiforge.workspaces.cleanup import Leftovers
from tests.e2e._workspaces import assert_error, data_of, new_workspace
from tests.factories import User, make_admin, register


async def _upload(client: AsyncClient, user: User, workspace_id: str, data: bytes) -> str:
    headers = {**user.headers, "X-Workspace-Id": workspace_id}
    uploaded = await client.post("/api/v1/files", files={"file": ("a.bin", data)}, headers=headers)
    url: str = data_of(uploaded)["url"]
    return url


def _files_of(settings: Settings, workspace_id: str) -> list[Path]:
    return sorted(p for p in (settings.resolved_files_dir / workspace_id).rglob("*") if p.is_file())


async def _until_no_bytes_left(settings: Settings) -> None:
    """The bytes are moved aside at once and removed off the event loop: wait for that."""
    deleted = settings.resolved_files_dir / DELETED
    for _ in range(500):
        if not any(deleted.iterdir()):  # each moved directory goes once emptied
            return
        await asyncio.sleep(0.01)
    raise AssertionError("deleted bytes are still there")


async def test_deleting_a_workspace_removes_its_bytes_and_no_others(
    client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    team = await new_workspace(client, owner)
    for data in (b"one", b"two"):
        await _upload(client, owner, team, data)
    kept = await _upload(client, owner, owner.workspace_id, b"kept")
    assert len(_files_of(settings, team)) == 2

    deleted = await client.delete(f"/api/v1/workspaces/{team}", headers=owner.headers)
    assert data_of(deleted) == {"id": team}
    assert not (settings.resolved_files_dir / team).exists()
    await _until_no_bytes_left(settings)
    assert len(_files_of(settings, owner.workspace_id)) == 1
    assert (await client.get(kept, headers=owner.headers)).content == b"kept"


async def test_deleting_a_workspace_without_files_needs_no_bytes_to_remove(
    client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    team = await new_workspace(client, owner)
    deleted = await client.delete(f"/api/v1/workspaces/{team}", headers=owner.headers)
    assert data_of(deleted) == {"id": team}
    assert not (settings.resolved_files_dir / team).exists()


async def test_deleting_an_account_removes_the_bytes_of_the_workspaces_it_owned(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    team = await new_workspace(client, user)
    for workspace_id in (user.workspace_id, team):
        await _upload(client, user, workspace_id, b"bytes")
    kept = await _upload(client, admin, admin.workspace_id, b"kept")

    deleted = await client.delete(f"/api/v1/admin/users/{user.account_id}", headers=admin.headers)
    assert deleted.status_code == 200, deleted.text
    for workspace_id in (user.workspace_id, team):
        assert not (settings.resolved_files_dir / workspace_id).exists()
    await _until_no_bytes_left(settings)
    assert (await client.get(kept, headers=admin.headers)).content == b"kept"


@pytest.mark.parametrize("route", ["workspace", "account"])
async def test_a_deletion_that_rolls_back_keeps_the_bytes(
    app: FastAPI,
    client: AsyncClient,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    route: str,
) -> None:
    admin = await make_admin(app, client)
    owner = await register(client)
    team = await new_workspace(client, owner)
    url = await _upload(client, owner, team, b"still here")
    original = Leftovers.delete

    async def then_fail(self: Leftovers, *args: Any, **kwargs: Any) -> None:
        await original(self, *args, **kwargs)
        raise ConflictError("failed after the clean-up", reason="test_failure")

    monkeypatch.setattr(Leftovers, "delete", then_fail)
    if route == "workspace":
        refused = await client.delete(f"/api/v1/workspaces/{team}", headers=owner.headers)
    else:
        refused = await client.delete(
            f"/api/v1/admin/users/{owner.account_id}", headers=admin.headers
        )
    assert_error(refused, 409, "test_failure")
    assert len(_files_of(settings, team)) == 1
    headers = {**owner.headers, "X-Workspace-Id": team}
    assert (await client.get(url, headers=headers)).content == b"still here"
