"""Lock order of an app's deletion and the calls into that app (PostgreSQL; SQLite has one
writer). The call holds what its first step locked (the records table, the collection's row, a
record, a right's row) when `DELETE /apps/{appId}` starts; the deletion then goes as far as it
can, and the call goes on to what it does next (a right of the app's user system, its charge).
Either way the deletion commits (200) and the call either committed first (200) or finds its
app or dataset gone (404) — never a deadlock PostgreSQL breaks by failing one of them (500) —
with the ledger balanced, nothing charged for a 404 and no record of the app left behind. The
same holds for the records API and for a schema change of one of the app's datasets."""

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from apiforge.builder import service as builder_service
from apiforge.builder.models import App
from apiforge.datasets import service as datasets_service
from apiforge.datasets.models import Collection, Record, UserRight
from apiforge.datasets.store import PreparedPage, RecordStore
from apiforge.engine.steps import auth as auth_steps
from tests.e2e._apps import in_workspace, new_api, new_app
from tests.e2e._billing import balances, ledger_invariants, top_up
from tests.e2e._deletion import (
    GRANT,
    ID,
    INDEXED,
    INSERT,
    PRICE,
    TAG,
    TALLY,
    TEXT,
    UPDATE,
    paused_race,
)
from tests.e2e._keys import call, create_key, subscribe
from tests.e2e._workspaces import data_of, deleted_before_steps, new_workspace
from tests.factories import User, make_admin, register

REMOVE = {"id": "gone", "type": "delete", "collection": "notes", "recordId": {"expr": "args.id"}}
LIST = {"id": "notes", "type": "getMany", "collection": "notes", "pageSize": 10}
# api -> (params, steps, where the call pauses: after RecordStore's method, the page or the grant)
APIS: dict[str, tuple[list[Any], list[Any], str]] = {
    "tally": ([], [TALLY, INSERT], "count"),
    "list": ([], [LIST, GRANT], "page"),
    "add": ([], [INSERT], "insert"),
    "touch": ([ID], [UPDATE], "update"),
    "remove": ([ID], [REMOVE, INSERT], "delete"),
    "signUp": ([], [INSERT, GRANT], "insert"),
    "touchAndGrant": ([ID], [UPDATE, GRANT], "update"),
    "grantAndAdd": ([], [GRANT, INSERT], "grant"),
}
PRICES = {"priced": PRICE, "free": 0}
FREE_STEPS = ("insert", "update", "delete", "count", "getMany", "userRight")


@dataclass
class Scene:
    builder: User
    consumer: User
    app_id: str
    dataset_id: str
    builds: str  # the workspace owning the app
    caller: str  # the calling workspace
    secret: str
    record_id: str  # a record of the caller's partition


async def _notes_app(
    client: AsyncClient, headers: dict[str, str], fields: list[dict[str, Any]], price: int
) -> tuple[str, str]:
    app_id = await new_app(client, headers, "Notes", visibility="public")
    body = {"appId": app_id, "name": "notes", "fields": fields}
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=headers))["id"]
    for api, (params, steps, _) in APIS.items():
        await new_api(client, headers, app_id, api, params=params, steps=steps, price=price)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=headers
    )
    data_of(published)
    return app_id, dataset_id


async def _scene(
    app: FastAPI,
    client: AsyncClient,
    *,
    own_app: bool = False,
    fields: list[dict[str, Any]] = INDEXED["indexed"],
    price: int = PRICE,
) -> Scene:
    """A builder's team workspace owning the app, and a consumer's team workspace calling it
    (`own_app`: the consumer's team owns the app it calls, which no one else uses), funded,
    with one record. Its APIs cost `price` (0: its steps cost nothing either)."""
    admin = await make_admin(app, client)
    if not price:
        for step in FREE_STEPS:
            url = f"/api/v1/admin/pricing/{step}"
            data_of(await client.put(url, json={"cost": 0}, headers=admin.headers))
    builder, consumer = await register(client), await register(client)
    caller = await new_workspace(client, consumer, "Caller")
    if own_app:
        builder, builds = consumer, caller
    else:
        builds = await new_workspace(client, builder, "Builder")
    app_id, dataset_id = await _notes_app(client, in_workspace(builder, builds), fields, price)
    await top_up(client, admin, builds, 1)  # its earnings wallet exists
    headers = in_workspace(consumer, caller)
    await subscribe(client, headers, app_id)
    _, secret = await create_key(client, headers, type="app", appId=app_id)
    await top_up(client, admin, caller, 10 * PRICE)
    added = await call(client, secret, app_id, "add")
    return Scene(
        builder,
        consumer,
        app_id,
        dataset_id,
        builds,
        caller,
        secret,
        data_of(added)["note"]["id"],
    )


def _pause_point(api: str) -> tuple[Any, str]:
    where = APIS[api][2]
    if where == "grant":
        return auth_steps, "grant_rights"
    if where == "page":  # a getMany runs its prepared statements
        return PreparedPage, "run"
    return RecordStore, where


def _delete_app(client: AsyncClient, s: Scene, *, force: bool) -> Awaitable[Response]:
    query = "?force=true" if force else ""
    headers = in_workspace(s.builder, s.builds)
    return client.delete(f"/api/v1/apps/{s.app_id}{query}", headers=headers)


async def _left_of(app: FastAPI, s: Scene) -> tuple[int, int, int]:
    """The app's rows left: apps, collections, records of its dataset, rights."""
    async with app.state.engine.connect() as conn:
        apps = await conn.scalar(select(func.count()).select_from(App).where(App.id == s.app_id))
        collections = await conn.scalar(
            select(func.count()).select_from(Collection).where(Collection.app_id == s.app_id)
        )
        records = await conn.scalar(
            select(func.count()).select_from(Record).where(Record.collection_id == s.dataset_id)
        )
        rights = await conn.scalar(
            select(func.count()).select_from(UserRight).where(UserRight.app_id == s.app_id)
        )
    return int(apps or 0) + int(collections or 0), int(records or 0), int(rights or 0)


def _assert_lost_cleanly(answered: Response) -> None:
    """A call that comes second finds the app (or its dataset) gone: a 404 naming it."""
    assert answered.status_code in (200, 404), answered.text
    if answered.status_code == 404:
        reason = answered.json()["data"]["error"]
        assert reason in ("app_not_found", "dataset_not_found"), answered.text


@pytest.mark.parametrize("fields", list(INDEXED))
@pytest.mark.parametrize("kind", list(PRICES))
@pytest.mark.parametrize("api", list(APIS))
@pytest.mark.parametrize("whose", ["subscribed", "own"])
async def test_a_call_into_an_app_and_the_apps_deletion_do_not_deadlock(
    app: FastAPI,
    client: AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    api: str,
    kind: str,
    fields: str,
    whose: str,
) -> None:
    s = await _scene(
        app, client, own_app=whose == "own", fields=INDEXED[fields], price=PRICES[kind]
    )
    before = sum((await balances(client, s.consumer, s.caller)).values())
    target, name = _pause_point(api)
    answered, deleted = await paused_race(
        monkeypatch,
        target,
        name,
        lambda: call(client, s.secret, s.app_id, api, _args(api, s)),
        lambda: _delete_app(client, s, force=whose == "subscribed"),
    )
    data_of(deleted)
    _assert_lost_cleanly(answered)
    await ledger_invariants(app)
    paid = before - sum((await balances(client, s.consumer, s.caller)).values())
    if answered.status_code != 200 or not PRICES[kind]:
        assert paid == 0, answered.text
    elif whose == "subscribed":
        assert paid == PRICE, answered.text
    else:  # its own app's call: the price is its own earnings, the steps' cost is paid
        assert 0 < paid < PRICE, answered.text
    assert await _left_of(app, s) == (0, 0, 0)


def _args(api: str, s: Scene) -> dict[str, Any]:
    return {"id": s.record_id} if APIS[api][0] else {}


@pytest.mark.parametrize("fields", list(INDEXED))
async def test_a_records_api_write_and_the_apps_deletion(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, fields: str
) -> None:
    s = await _scene(app, client, fields=INDEXED[fields])
    headers = in_workspace(s.builder, s.builds)
    url = f"/api/v1/datasets/{s.dataset_id}/records"
    answered, deleted = await paused_race(
        monkeypatch,
        RecordStore,
        "insert",
        lambda: client.post(url, json={"text": "owner's"}, headers=headers),
        lambda: _delete_app(client, s, force=True),
    )
    data_of(deleted)
    _assert_lost_cleanly(answered)
    assert await _left_of(app, s) == (0, 0, 0)


def _schema_change(
    client: AsyncClient, s: Scene, fields: list[dict[str, Any]]
) -> Awaitable[Response]:
    headers = {**in_workspace(s.builder, s.builds), "If-Match": "*"}
    body = {"name": "notes", "fields": fields}
    return client.put(f"/api/v1/datasets/{s.dataset_id}", json=body, headers=headers)


# A schema change that builds an index, drops one, removes a field (erasing its values).
CHANGES = {
    "index": [TEXT, TAG, {"name": "more", "type": "string", "indexed": True}],
    "unindex": [TEXT, {**TAG, "indexed": False}],
    "remove": [TEXT],
}


@pytest.mark.parametrize("first", ["change", "deletion"])
@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_schema_change_and_the_apps_deletion(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, change: str, first: str
) -> None:
    s = await _scene(app, client)
    changing = lambda: _schema_change(client, s, CHANGES[change])  # noqa: E731
    deleting = lambda: _delete_app(client, s, force=True)  # noqa: E731
    if first == "change":  # paused holding the app and the records table (its indexes)
        changed, deleted = await paused_race(
            monkeypatch, datasets_service, "sync_indexes", changing, deleting
        )
    else:  # paused holding the app and the records table (its dropped indexes)
        deleted, changed = await paused_race(
            monkeypatch, builder_service, "drop_indexes", deleting, changing
        )
    data_of(deleted)
    _assert_lost_cleanly(changed)
    assert await _left_of(app, s) == (0, 0, 0)


@pytest.mark.parametrize("kind", list(PRICES))
@pytest.mark.parametrize("api", list(APIS))
async def test_a_call_whose_app_went_before_its_steps_is_a_404(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, api: str, kind: str
) -> None:
    s = await _scene(app, client, price=PRICES[kind])
    before = await ledger_invariants(app)
    answered = await deleted_before_steps(
        app,
        monkeypatch,
        s.app_id,
        lambda: call(client, s.secret, s.app_id, api, _args(api, s)),
        model=App,
    )
    assert answered.status_code == 404, answered.text
    _assert_lost_cleanly(answered)
    assert await ledger_invariants(app) == before
    assert await _left_of(app, s) == (0, 0, 0)
