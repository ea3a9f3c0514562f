"""A published version's cached collections follow a field change: its writes check the
collection's version (SQLite: the insert is conditional on it, the update reads it with the
record) and read the fields under the lock only when it moved. A version cached before a dataset
save reads its collections' versions again — at once on the node that saved it, within a second
on another — so its writes take that fast path again, and write what the slow path writes."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import select

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.datasets.models import Record
from apiforge.datasets.schema import CollectionSchema, FieldKinds
from apiforge.datasets.store import RecordStore
from apiforge.engine import loader as loader_module
from apiforge.engine.loader import ApiLoader
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import data_of
from tests.factories import User, register

pytestmark = pytest.mark.anyio

TEXT: dict[str, Any] = {"name": "text", "type": "string", "required": True}
TAG: dict[str, Any] = {"name": "tag", "type": "string"}
EXTRA: dict[str, Any] = {"name": "extra", "type": "integer"}
PRICE = 100
ADD = [
    {
        "id": "note",
        "type": "insert",
        "collection": "notes",
        "data": {"text": {"expr": "args.text"}, "tag": {"expr": "args.tag"}},
    }
]
EDIT = [
    {
        "id": "note",
        "type": "update",
        "collection": "notes",
        "recordId": {"expr": "args.id"},
        "data": {"text": "edited"},
    }
]
# A change of the fields (a dataset save) -> the fields after it.
CHANGES: dict[str, list[dict[str, Any]]] = {
    "added": [TEXT, TAG, EXTRA],
    "required": [TEXT, {**TAG, "required": True}],
    "removed": [TEXT],  # once 1.0.0, which writes it, is deprecated
}


@asynccontextmanager
async def _node(settings: Settings) -> AsyncIterator[tuple[AsyncClient, FastAPI]]:
    """Another server process over the same database: its own app, loader and caches."""
    application = create_app(settings)
    transport = ASGITransport(app=application, raise_app_exceptions=False)
    try:
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http, application
    finally:
        await shutdown(application)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The collections whose fields a record write read under the lock (`_hold_fields`): every
    write on PostgreSQL, only a write whose schema's version moved on SQLite."""
    calls: list[str] = []
    original = RecordStore._hold_fields

    async def counted(self: RecordStore, schema: CollectionSchema, partition: str) -> FieldKinds:
        calls.append(schema.id)
        return await original(self, schema, partition)

    monkeypatch.setattr(RecordStore, "_hold_fields", counted)
    return calls


async def _notes_app(client: AsyncClient, owner: User) -> tuple[str, str, str]:
    """(app id, dataset id, app key): `notes` (text, tag) with `add` and `edit`, 1.0.0."""
    app_id = await new_app(client, owner.headers, "Notes")
    body = {"appId": app_id, "name": "notes", "fields": [TEXT, TAG]}
    dataset = data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    params = [{"name": "text", "type": "string", "required": True}, {"name": "tag"}]
    await new_api(client, owner.headers, app_id, "add", params=params, steps=ADD, price=PRICE)
    await new_api(
        client, owner.headers, app_id, "edit", params=[{"name": "id"}], steps=EDIT, price=PRICE
    )
    url = f"/api/v1/apps/{app_id}/versions"
    data_of(await client.post(url, json={"bump": "major"}, headers=owner.headers))
    _, secret = await app_key(client, owner, app_id)
    return app_id, str(dataset["id"]), secret


async def _save(
    client: AsyncClient, owner: User, dataset_id: str, fields: list[dict[str, Any]]
) -> int:
    """Save the dataset's fields; the collection's version it has now."""
    response = await client.put(
        f"/api/v1/datasets/{dataset_id}",
        json={"name": "notes", "fields": fields},
        headers={**owner.headers, "If-Match": "*"},
    )
    version: int = data_of(response)["version"]
    return version


async def _add_and_edit(client: AsyncClient, secret: str, app_id: str, version: str) -> str:
    """Insert a note through `version`, then update it: two record writes; the note's id."""

    def ok(response: Response) -> Any:
        assert response.status_code == 200, response.text
        return data_of(response)["note"]

    note = ok(await call(client, secret, app_id, "add", {"text": "t", "tag": "x"}, version=version))
    edited = ok(await call(client, secret, app_id, "edit", {"id": note["id"]}, version=version))
    assert (edited["text"], edited["tag"], edited["version"]) == ("edited", "x", 2)
    record_id: str = note["id"]
    return record_id


def _basis_version(app: FastAPI, app_id: str) -> int | None:
    """The collection version `notes` of the loader's cached 1.0.0 holds (`latest` is it)."""
    loader: ApiLoader = app.state.engine_state.loader
    entry = loader._published.get((app_id, "1.0.0"))
    assert entry is not None
    basis = entry.collections["notes"].basis
    return None if basis is None else basis.version


async def _stored(app: FastAPI, record_id: str) -> Any:
    async with app.state.engine.connect() as conn:
        return await conn.scalar(select(Record.data).where(Record.id == record_id))


def _sqlite(app: FastAPI) -> bool:
    return bool(app.state.engine.dialect.name == "sqlite")


@pytest.mark.parametrize("version", ["latest", "1.0.0"])
async def test_writes_of_a_published_version_take_the_fast_path_after_a_field_change(
    app: FastAPI, client: AsyncClient, held: list[str], version: str
) -> None:
    owner = await register(client)
    app_id, dataset_id, secret = await _notes_app(client, owner)
    await _add_and_edit(client, secret, app_id, version)  # the version is cached
    now = await _save(client, owner, dataset_id, CHANGES["added"])
    held.clear()

    for _ in range(2):
        await _add_and_edit(client, secret, app_id, version)

    assert _basis_version(app, app_id) == now
    assert len(held) == (0 if _sqlite(app) else 4)  # PostgreSQL reads the fields every write


@pytest.mark.parametrize("change", sorted(CHANGES))
async def test_another_nodes_version_follows_a_field_change_within_a_second(
    app: FastAPI, client: AsyncClient, settings: Settings, held: list[str], change: str
) -> None:
    """Node 2 keeps its cached collections for up to `TARGET_TTL` (a call meanwhile costs no
    read: its writes read the fields, as before), then reads their versions again. What its
    writes store is the same either way."""
    owner = await register(client)
    app_id, dataset_id, secret = await _notes_app(client, owner)
    async with _node(settings) as (other, other_app):
        clock = [1000.0]
        other_app.state.engine_state.loader.clock = lambda: clock[0]
        await _add_and_edit(other, secret, app_id, "1.0.0")  # node 2 caches 1.0.0
        if change == "removed":
            url = f"/api/v1/apps/{app_id}/versions/1.0.0"
            data_of(await client.patch(url, json={"deprecated": 1}, headers=owner.headers))
        now = await _save(client, owner, dataset_id, CHANGES[change])  # on node 1
        held.clear()

        stale = await _add_and_edit(other, secret, app_id, "1.0.0")
        slow = len(held)
        clock[0] += loader_module.TARGET_TTL
        held.clear()
        fresh = await _add_and_edit(other, secret, app_id, "1.0.0")

        assert (slow, len(held)) == ((2, 0) if _sqlite(app) else (2, 2))
        assert _basis_version(other_app, app_id) == now
    assert await _stored(app, fresh) == await _stored(app, stale) == {"text": "edited", "tag": "x"}
