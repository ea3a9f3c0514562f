"""Invariants under concurrent requests: a field's type or encryption changes only while no
record holds a value of it, so a write whose schema was loaded before the change (a call on
`dev`, the records API) never stores a value of the old kind after it: either the change sees
the value (409 `field_has_values`) or the write is refused (409 `schema_changed`). Such a value
would break the collection's reads: PostgreSQL's typed filters fail on it, an encrypted field
reads as null, a plaintext one shows ciphertext."""

import asyncio
from typing import Any, NamedTuple

import orjson
import pytest
from httpx import AsyncClient, Response
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.datasets import service as datasets_service
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import call, create_key
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

pytestmark = pytest.mark.anyio

# How long a write gets to land while the change is paused: one that cannot (SQLite: the change
# holds the write lock) is released after it. The outcome asserted holds whatever the wait.
LANDING_SECONDS = 1.0

TEXT: dict[str, Any] = {"name": "text", "type": "string", "required": True}
PLAIN: dict[str, Any] = {"name": "tag", "type": "string"}
SEALED: dict[str, Any] = {**PLAIN, "encrypted": True}
# (the field before, after)
CHANGES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "type": (PLAIN, {"name": "tag", "type": "integer"}),
    "encrypt": (PLAIN, SEALED),
    "decrypt": (SEALED, PLAIN),
    # An index of the new type is built over the values (PostgreSQL: a cast of each).
    "indexed": ({**PLAIN, "indexed": True}, {"name": "tag", "type": "integer", "indexed": True}),
}
ID = {"name": "id", "type": "string", "required": True, "max": 64}
PATCH = {"name": "patch", "type": "object", "required": True}
APIS: dict[str, tuple[list[Any], list[Any]]] = {
    "addNote": (
        [],
        [{"id": "note", "type": "insert", "collection": "notes", "data": {"text": "n"}}],
    ),
    "editNote": (
        [ID, PATCH],
        [
            {
                "id": "note",
                "type": "update",
                "collection": "notes",
                "recordId": {"expr": "args.id"},
                "data": {"expr": "args.patch"},
            }
        ],
    ),
}


class Notes(NamedTuple):
    """An app's `notes` (text, tag), a `dev` key of its owner and a note without a tag."""

    owner: User
    app_id: str
    dataset_id: str
    secret: str
    note_id: str


async def _notes(client: AsyncClient, tag: dict[str, Any]) -> Notes:
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Tagged notes")
    body = {"appId": app_id, "name": "notes", "fields": [TEXT, tag]}
    dataset_id = str(
        data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))["id"]
    )
    for api, (params, steps) in APIS.items():
        await new_api(client, owner.headers, app_id, api, params=params, steps=steps, price=100)
    _, secret = await create_key(client, owner.headers, type="ws", role="admin")
    added = await call(client, secret, app_id, "addNote", version="dev")
    return Notes(owner, app_id, dataset_id, secret, str(data_of(added)["note"]["id"]))


def _change(client: AsyncClient, notes: Notes, tag: dict[str, Any]) -> "asyncio.Task[Response]":
    body = {"name": "notes", "fields": [TEXT, tag]}
    headers = {**notes.owner.headers, "If-Match": "*"}
    return asyncio.ensure_future(
        client.put(f"/api/v1/datasets/{notes.dataset_id}", json=body, headers=headers)
    )


def _edit(client: AsyncClient, notes: Notes, via: str) -> "asyncio.Task[Response]":
    """Set the note's tag to "late" with the schema as it is before the change."""
    if via == "dev":
        args = {"id": notes.note_id, "patch": {"tag": "late"}}
        return asyncio.ensure_future(
            call(client, notes.secret, notes.app_id, "editNote", args, version="dev")
        )
    url = f"/api/v1/datasets/{notes.dataset_id}/records/{notes.note_id}"
    return asyncio.ensure_future(
        client.patch(url, json={"tag": "late"}, headers=notes.owner.headers)
    )


async def _reached(point: asyncio.Event, request: "asyncio.Task[Any]") -> None:
    """Wait until `request` reaches `point`; it answering first is a failure, not a hang."""
    waiting = asyncio.create_task(point.wait())
    await asyncio.wait({waiting, request}, return_when=asyncio.FIRST_COMPLETED)
    assert point.is_set(), request.result().text


@pytest.mark.parametrize("via", ["dev", "records"])
@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_value_of_the_old_kind_never_outlives_a_type_or_encryption_change(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch, change: str, via: str
) -> None:
    before, after = CHANGES[change]
    notes = await _notes(client, before)
    checked, release = asyncio.Event(), asyncio.Event()
    original = datasets_service.CollectionService._has_values

    async def paused(
        connection: AsyncConnection, collection_id: str, name: str, *, other_than: str | None = None
    ) -> bool:
        """The change found no value of the field (its first look): hold it there."""
        found = await original(connection, collection_id, name, other_than=other_than)
        if not checked.is_set():
            checked.set()
            await release.wait()
        return found

    monkeypatch.setattr(datasets_service.CollectionService, "_has_values", staticmethod(paused))
    changing = _change(client, notes, after)
    await _reached(checked, changing)
    editing = _edit(client, notes, via)
    await asyncio.wait({editing}, timeout=LANDING_SECONDS)
    release.set()
    changed, edited = await changing, await editing

    now = after if changed.status_code == 200 else before
    expected = "late" if edited.status_code == 200 else None
    # What a write stored reads back as written: no ciphertext shown, no value lost to one...
    assert await _tags(client, notes) == [expected]
    if not now.get("encrypted"):  # ...and the field's typed SQL (PostgreSQL: a cast) reads it
        matching = await _tags(client, notes, {"tag": {"_nnull": True}})
        assert matching == [expected] * (expected is not None)
    if changed.status_code == 200:  # the edit waited, or came after: its schema was stale
        assert_error(edited, 409, "schema_changed")
        assert edited.headers["Retry-After"] == "1"
    else:  # the edit landed first: the change saw its value
        assert_error(changed, 409, "field_has_values")
        assert expected == "late", edited.text


async def _tags(
    client: AsyncClient, notes: Notes, where: dict[str, Any] | None = None
) -> list[Any]:
    """The notes' tags, read by the records API (with the filter `where`)."""
    params = {} if where is None else {"filter": orjson.dumps(where).decode()}
    listed = await client.get(
        f"/api/v1/datasets/{notes.dataset_id}/records", params=params, headers=notes.owner.headers
    )
    return [r["tag"] for r in data_of(listed)["list"]]
