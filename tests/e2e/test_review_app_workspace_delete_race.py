"""An app's deletion and, at the same moment, the deletion of the workspace owning it — by its
owner, or with the owner's account (PostgreSQL; SQLite has one writer). One deletion pauses
once it holds what a step of its lock order took (the app, the records table, everything
deleted), the other starts and goes as far as it can, then the first goes on. Both end without
a deadlock PostgreSQL breaks by failing one of them (500): the workspace's deletion commits
(200), the app's either committed first (200) or finds its app or workspace gone (404); nothing
of either is left (app, collection, records, indexes, keys, subscriptions, wallets) and the
ledger stays balanced."""

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, or_, select, text

from apiforge.billing.models import Wallet
from apiforge.builder import service as builder_service
from apiforge.builder.models import App
from apiforge.datasets.models import Collection, Record
from apiforge.keys.models import ApiKey, Subscription
from apiforge.workspaces.cleanup import Leftovers
from apiforge.workspaces.models import Workspace
from tests.e2e._apps import in_workspace, new_api, new_app
from tests.e2e._billing import ledger_invariants, top_up
from tests.e2e._deletion import INDEXED, INSERT, PRICE, paused_race
from tests.e2e._keys import call, create_key, subscribe
from tests.e2e._workspaces import add_member, data_of, new_workspace
from tests.factories import User, make_admin, register

# first -> (the deletion that goes first, where it pauses: after `target.<name>` returned)
PAUSES: dict[str, tuple[str, Any, str]] = {
    "app-holding-app": ("app", builder_service, "find_app"),  # FOR NO KEY UPDATE
    "app-holding-table": ("app", builder_service, "ensure_unused"),  # and the app FOR UPDATE
    "app-deleted": ("app", builder_service, "delete_row"),  # its cascade done, not committed
    "workspace-holding-table": ("workspace", Leftovers, "drop_indexes"),
    "workspace-deleted": ("workspace", Leftovers, "delete"),  # its cascade done, not committed
}


@dataclass
class Scene:
    admin: User
    owner: User  # owns the workspace (and, by `by="account"`, goes with it)
    manager: User  # an admin of the workspace, who deletes the app
    workspace: str
    app_id: str
    dataset_id: str


async def _scene(
    app: FastAPI, client: AsyncClient, fields: list[dict[str, Any]], records: bool
) -> Scene:
    """A team workspace owning a published app with one dataset (`fields`), enabled by the
    workspace itself with an app key and a funded wallet; `records`: one call wrote one."""
    admin = await make_admin(app, client)
    owner, manager = await register(client), await register(client)
    workspace = await new_workspace(client, owner, "Team")
    await add_member(client, owner, workspace, manager, "admin")
    headers = in_workspace(owner, workspace)
    app_id = await new_app(client, headers, "Notes")
    body = {"appId": app_id, "name": "notes", "fields": fields}
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=headers))["id"]
    await new_api(client, headers, app_id, "add", steps=[INSERT], price=PRICE)
    published = {"bump": "minor"}
    data_of(await client.post(f"/api/v1/apps/{app_id}/versions", json=published, headers=headers))
    await top_up(client, admin, workspace, 10 * PRICE)
    await subscribe(client, headers, app_id)
    _, secret = await create_key(client, headers, type="app", appId=app_id)
    if records:
        data_of(await call(client, secret, app_id, "add"))
    return Scene(admin, owner, manager, workspace, app_id, dataset_id)


def _delete_app(client: AsyncClient, s: Scene) -> Any:
    headers = in_workspace(s.manager, s.workspace)
    return client.delete(f"/api/v1/apps/{s.app_id}", headers=headers)


def _delete_workspace(client: AsyncClient, s: Scene, by: str) -> Any:
    """By its owner (`forced`: with `force`, which skips the `app_in_use` check and its lock
    of the apps), or with its owner's account."""
    if by == "account":
        url = f"/api/v1/admin/users/{s.owner.account_id}?force=true"
        return client.delete(url, headers=s.admin.headers)
    query = "?force=true" if by == "forced" else ""
    return client.delete(f"/api/v1/workspaces/{s.workspace}{query}", headers=s.owner.headers)


async def _left_of(app: FastAPI, s: Scene) -> dict[str, int]:
    """What is left of the app and the workspace, by kind (all zero once both are gone)."""
    counts = {
        "workspace": select(func.count()).where(Workspace.id == s.workspace),
        "app": select(func.count()).where(App.id == s.app_id),
        "collection": select(func.count()).where(Collection.app_id == s.app_id),
        "records": select(func.count()).where(
            or_(Record.collection_id == s.dataset_id, Record.partition == s.workspace)
        ),
        "keys": select(func.count()).where(
            or_(ApiKey.workspace_id == s.workspace, ApiKey.app_id == s.app_id)
        ),
        "subscriptions": select(func.count()).where(
            or_(Subscription.workspace_id == s.workspace, Subscription.app_id == s.app_id)
        ),
        "wallets": select(func.count()).where(Wallet.workspace_id == s.workspace),
    }
    async with app.state.engine.connect() as conn:
        left = {name: int(await conn.scalar(stmt) or 0) for name, stmt in counts.items()}
        if conn.dialect.name == "postgresql":
            indexes = await conn.execute(text("SELECT indexname FROM pg_indexes"))
        else:
            indexes = await conn.execute(text("SELECT name FROM sqlite_master WHERE type='index'"))
        left["indexes"] = sum(s.dataset_id in str(row[0]) for row in indexes)
    return left


def _assert_deleted_or_gone(response: Response) -> None:
    """The app's deletion: done (200), or the workspace's came first (404 naming either)."""
    assert response.status_code in (200, 404), response.text
    if response.status_code == 404:
        reason = response.json()["data"]["error"]
        assert reason in ("app_not_found", "workspace_not_found"), response.text


@pytest.mark.parametrize("records", ["records", "empty"])
@pytest.mark.parametrize("fields", list(INDEXED))
@pytest.mark.parametrize("first", list(PAUSES))
@pytest.mark.parametrize("by", ["workspace", "forced", "account"])
async def test_an_apps_deletion_and_its_workspaces_deletion_do_not_deadlock(
    app: FastAPI,
    client: AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    by: str,
    first: str,
    fields: str,
    records: str,
) -> None:
    s = await _scene(app, client, INDEXED[fields], records == "records")
    before = await ledger_invariants(app)
    who, target, name = PAUSES[first]
    deleting_app = lambda: _delete_app(client, s)  # noqa: E731
    deleting_workspace = lambda: _delete_workspace(client, s, by)  # noqa: E731
    if who == "app":
        app_deleted, workspace_deleted = await paused_race(
            monkeypatch, target, name, deleting_app, deleting_workspace
        )
    else:
        workspace_deleted, app_deleted = await paused_race(
            monkeypatch, target, name, deleting_workspace, deleting_app
        )
    data_of(workspace_deleted)
    _assert_deleted_or_gone(app_deleted)
    if who == "app":  # it held the app before the other began
        data_of(app_deleted)
    assert await ledger_invariants(app) == before  # no balance moved, none lost
    assert set((await _left_of(app, s)).values()) == {0}, await _left_of(app, s)
