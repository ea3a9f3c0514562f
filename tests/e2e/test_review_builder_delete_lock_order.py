"""Builder and key changes of an app while its workspace, its owner's account, the app itself, or
the calling workspace (and its owner's account) is deleted (PostgreSQL; SQLite has one writer).

One side pauses once it holds what its first locks took — the change its app (publish, API and
dataset saves), its workspace (import), its subscription or key (app keys), the app it enables
(subscribe); a deletion its workspace's apps, or everything once its cascade ran — the other
starts and goes as far as it can, then the first goes on. Neither ends in a deadlock PostgreSQL
breaks by failing one side (500): a change that held its locks first is done, and the deletion
after it takes it along; a change coming after a deletion finds what it changes gone (a 404
envelope) or, when the deletion was refused (409 `app_in_use`), goes on. Nothing is left
behind: no row, record or run-time index of anything deleted."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select, text

from apiforge.admin import service as admin_service
from apiforge.builder import service as builder_service
from apiforge.builder import transfer, versions
from apiforge.builder.models import ApiDefinition, App, AppVersion
from apiforge.datasets import service as datasets_service
from apiforge.datasets.models import Collection, Record
from apiforge.keys import service as keys_service
from apiforge.keys.models import ApiKey, Subscription
from apiforge.keys.service import ApiKeyService, SubscriptionService
from apiforge.workspaces import service as workspaces_service
from apiforge.workspaces.cleanup import Leftovers
from apiforge.workspaces.models import Workspace
from tests.e2e._apps import in_workspace, new_api, new_app, set_step
from tests.e2e._deletion import INSERT, PRICE, TAG, TEXT, paused_race
from tests.e2e._keys import create_key, subscribe
from tests.e2e._workspaces import data_of, new_workspace
from tests.factories import User, make_admin, register


@dataclass
class Scene:
    admin: User
    maker: User  # owns `making`, the workspace of the public app
    consumer: User  # owns `calling`, which enabled the app (`subscribed`)
    making: str
    calling: str
    app_id: str
    dataset_id: str
    dataset_version: int
    api_id: str
    document: dict[str, Any]  # the app's export, for an import
    subscription_id: str | None
    key_id: str | None


async def _scene(client: AsyncClient, app: FastAPI, subscribed: bool) -> Scene:
    """A published public app with an indexed dataset in a team workspace; another team
    workspace enabled it and holds an app key (`subscribed`)."""
    admin = await make_admin(app, client)
    maker, consumer = await register(client), await register(client)
    making = await new_workspace(client, maker, "Making")
    calling = await new_workspace(client, consumer, "Calling")
    headers = in_workspace(maker, making)
    app_id = await new_app(client, headers, "Notes", visibility="public")
    body = {"appId": app_id, "name": "notes", "fields": [TEXT, TAG]}
    created = data_of(await client.post("/api/v1/datasets", json=body, headers=headers))
    dataset = data_of(await client.get(f"/api/v1/datasets/{created['id']}", headers=headers))
    api_id = await new_api(client, headers, app_id, "add", steps=[INSERT], price=PRICE)
    published = {"bump": "minor"}
    data_of(await client.post(f"/api/v1/apps/{app_id}/versions", json=published, headers=headers))
    exported = await client.get(f"/api/v1/apps/{app_id}/export", headers=headers)
    assert exported.status_code == 200, exported.text
    subscription_id = key_id = None
    if subscribed:
        subscription_id = await subscribe(client, in_workspace(consumer, calling), app_id)
        key_id, _ = await create_key(
            client, in_workspace(consumer, calling), type="app", appId=app_id
        )
    return Scene(
        admin,
        maker,
        consumer,
        making,
        calling,
        app_id,
        dataset["id"],
        dataset["version"],
        api_id,
        exported.json(),
        subscription_id,
        key_id,
    )


Request = Callable[[AsyncClient, Scene], Awaitable[Response]]


@dataclass(frozen=True)
class Change:
    """A change, where it pauses when it goes first (after `target.<name>` returned: what
    its first locks took), whether the scene has the calling workspace subscribed, and the
    request."""

    target: Any
    name: str
    subscribed: bool
    request: Request


def _making(s: Scene) -> dict[str, str]:
    return in_workspace(s.maker, s.making)


def _calling(s: Scene) -> dict[str, str]:
    return in_workspace(s.consumer, s.calling)


async def _publish(client: AsyncClient, s: Scene) -> Response:
    body = {"bump": "patch"}
    return await client.post(f"/api/v1/apps/{s.app_id}/versions", json=body, headers=_making(s))


async def _create_api(client: AsyncClient, s: Scene) -> Response:
    body = {"api": "more", "steps": [set_step("one", 1)], "price": PRICE}
    return await client.post(f"/api/v1/apps/{s.app_id}/apis", json=body, headers=_making(s))


async def _save_api(client: AsyncClient, s: Scene) -> Response:
    url = f"/api/v1/apps/{s.app_id}/apis/{s.api_id}"
    return await client.patch(url, json={"description": "changed"}, headers=_making(s))


async def _delete_api(client: AsyncClient, s: Scene) -> Response:
    return await client.delete(f"/api/v1/apps/{s.app_id}/apis/{s.api_id}", headers=_making(s))


async def _create_dataset(client: AsyncClient, s: Scene) -> Response:
    body = {"appId": s.app_id, "name": "tags", "fields": [TAG]}
    return await client.post("/api/v1/datasets", json=body, headers=_making(s))


async def _save_dataset(client: AsyncClient, s: Scene) -> Response:
    """Its indexed field removed: the index is dropped and the records erased of it."""
    headers = {**_making(s), "If-Match": f'"{s.dataset_version}"'}
    body = {"name": "notes", "fields": [TEXT]}
    return await client.put(f"/api/v1/datasets/{s.dataset_id}", json=body, headers=headers)


async def _import(client: AsyncClient, s: Scene) -> Response:
    return await client.post("/api/v1/apps/import", json=s.document, headers=_making(s))


async def _subscribe(client: AsyncClient, s: Scene) -> Response:
    body = {"appId": s.app_id}
    return await client.post("/api/v1/subscriptions", json=body, headers=_calling(s))


async def _create_key(client: AsyncClient, s: Scene) -> Response:
    body = {"type": "app", "appId": s.app_id, "name": "second"}
    return await client.post("/api/v1/api-keys", json=body, headers=_calling(s))


async def _revoke_key(client: AsyncClient, s: Scene) -> Response:
    return await client.delete(f"/api/v1/api-keys/{s.key_id}", headers=_calling(s))


async def _unsubscribe(client: AsyncClient, s: Scene) -> Response:
    url = f"/api/v1/subscriptions/{s.subscription_id}"
    return await client.delete(url, headers=_calling(s))


BUILDER: dict[str, Change] = {
    "publish": Change(versions, "find_app", False, _publish),  # the app FOR UPDATE
    "create-api": Change(builder_service, "find_app", False, _create_api),
    "save-api": Change(builder_service, "find_app", False, _save_api),
    "delete-api": Change(builder_service, "find_app", False, _delete_api),
    "create-dataset": Change(datasets_service, "find_app", False, _create_dataset),
    "save-dataset": Change(datasets_service, "find_app", False, _save_dataset),
    "import": Change(transfer, "create_app_row", False, _import),  # the workspace's row
}
CALLING: dict[str, Change] = {
    "subscribe": Change(SubscriptionService, "_subscribable_app", False, _subscribe),
    "create-key": Change(ApiKeyService, "_lock", True, _create_key),  # the subscription
    "revoke-key": Change(ApiKeyService, "_find", True, _revoke_key),  # the key FOR UPDATE
    # its workspace and app FOR KEY SHARE, before its DELETE
    "unsubscribe": Change(keys_service, "hold_referenced", True, _unsubscribe),
}


async def _delete_workspace(client: AsyncClient, s: Scene, deleter: str) -> Response:
    if deleter in ("making-account", "calling-account"):
        user = s.maker if deleter == "making-account" else s.consumer
        url = f"/api/v1/admin/users/{user.account_id}?force=true"
        return await client.delete(url, headers=s.admin.headers)
    if deleter.startswith("app"):
        query = "?force=true" if deleter == "app-forced" else ""
        return await client.delete(f"/api/v1/apps/{s.app_id}{query}", headers=_making(s))
    workspace, owner = (s.calling, s.consumer) if deleter == "calling" else (s.making, s.maker)
    query = "?force=true" if deleter == "making-forced" else ""
    return await client.delete(f"/api/v1/workspaces/{workspace}{query}", headers=owner.headers)


# deleter -> where it pauses when it goes first: holding its apps; its cascade done
DELETION_PAUSES: dict[str, dict[str, tuple[Any, str]]] = {
    "holding-apps": {
        "workspace": (workspaces_service, "leftovers_of"),
        "account": (admin_service, "leftovers_of"),
        "app": (builder_service, "find_app"),
    },
    "deleted": {
        "workspace": (Leftovers, "delete"),
        "account": (Leftovers, "delete"),
        "app": (builder_service, "delete_row"),
    },
}
ORDERS = ["change-first", *DELETION_PAUSES]
# A deletion refused while another workspace has the app enabled (without `force`).
UNFORCED = {"making", "app"}
GONE = {
    "app_not_found",
    "workspace_not_found",
    "api_not_found",
    "dataset_not_found",
    "subscription_not_found",
    "api_key_not_found",
}


def _kind(deleter: str) -> str:
    if deleter.endswith("account"):
        return "account"
    return "app" if deleter.startswith("app") else "workspace"


async def _orphans(app: FastAPI) -> dict[str, int]:
    """What refers to something no longer there: rows (whatever the foreign keys do), records
    of deleted workspaces or collections, run-time indexes of deleted collections."""
    apps, collections = select(App.id), select(Collection.id)
    workspaces = select(Workspace.id)
    checks = {
        "apps": select(App.id).where(App.workspace_id.not_in(workspaces)),
        "apis": select(ApiDefinition.id).where(ApiDefinition.app_id.not_in(apps)),
        "versions": select(AppVersion.id).where(AppVersion.app_id.not_in(apps)),
        "collections": select(Collection.id).where(Collection.app_id.not_in(apps)),
        "records": select(Record.id).where(
            Record.partition.not_in(workspaces) | Record.collection_id.not_in(collections)
        ),
        "subscriptions": select(Subscription.id).where(
            Subscription.app_id.not_in(apps) | Subscription.workspace_id.not_in(workspaces)
        ),
        "keys": select(ApiKey.id).where(
            ApiKey.app_id.not_in(apps) | ApiKey.workspace_id.not_in(workspaces)
        ),
    }
    async with app.state.engine.connect() as conn:
        left = {name: len((await conn.execute(stmt)).all()) for name, stmt in checks.items()}
        if conn.dialect.name == "postgresql":
            rows = await conn.execute(text("SELECT indexname FROM pg_indexes"))
        else:
            rows = await conn.execute(text("SELECT name FROM sqlite_master WHERE type='index'"))
        existing = set((await conn.scalars(collections)).all())
        names = [str(row[0]) for row in rows if str(row[0])[1:].startswith("x_rec_")]
        left["indexes"] = sum(name.split("_")[2] not in existing for name in names)
    return left


async def _gone(app: FastAPI, s: Scene, deleter: str) -> bool:
    """Whether what the deletion deletes is gone (the app at least)."""
    async with app.state.engine.connect() as conn:
        if deleter.startswith("calling"):
            return not await conn.scalar(select(Workspace.id).where(Workspace.id == s.calling))
        return not await conn.scalar(select(App.id).where(App.id == s.app_id))


def _assert_done(response: Response) -> None:
    assert 200 <= response.status_code < 300, response.text


def _assert_done_or_gone(response: Response) -> None:
    if response.status_code < 300:
        return
    assert response.status_code == 404, response.text
    assert response.json()["data"]["error"] in GONE, response.text


async def _race(
    app: FastAPI,
    client: AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    change: Change,
    deleter: str,
    order: str,
) -> None:
    s = await _scene(client, app, change.subscribed)
    changing = lambda: change.request(client, s)  # noqa: E731
    deleting = lambda: _delete_workspace(client, s, deleter)  # noqa: E731
    if order == "change-first":
        changed, deleted = await paused_race(
            monkeypatch, change.target, change.name, changing, deleting
        )
        _assert_done(changed)
    else:
        target, name = DELETION_PAUSES[order][_kind(deleter)]
        deleted, changed = await paused_race(monkeypatch, target, name, deleting, changing)
        _assert_done_or_gone(changed)
    if deleted.status_code == 409 and deleter in UNFORCED:
        assert deleted.json()["data"]["error"] == "app_in_use", deleted.text
        assert not await _gone(app, s, deleter)
    else:
        data_of(deleted)
        assert await _gone(app, s, deleter)
    assert set((await _orphans(app)).values()) == {0}, await _orphans(app)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("deleter", ["making", "making-forced", "making-account", "app"])
@pytest.mark.parametrize("change", list(BUILDER))
async def test_a_builder_change_and_a_deletion_of_its_app_do_not_deadlock(
    app: FastAPI,
    client: AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
    deleter: str,
    order: str,
) -> None:
    if change == "import" and deleter == "app":
        pytest.skip("an import creates another app")
    await _race(app, client, monkeypatch, BUILDER[change], deleter, order)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    "deleter",
    ["making", "making-forced", "making-account", "app-forced", "calling", "calling-account"],
)
@pytest.mark.parametrize("change", list(CALLING))
async def test_a_subscription_or_key_change_and_a_deletion_do_not_deadlock(
    app: FastAPI,
    client: AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    change: str,
    deleter: str,
    order: str,
) -> None:
    if order == "deleted" and deleter in UNFORCED and CALLING[change].subscribed:
        pytest.skip("refused (app_in_use) before it deletes anything")
    await _race(app, client, monkeypatch, CALLING[change], deleter, order)
