"""Invariants under concurrent requests: a collection deleted without `force` never takes a
record a subscriber stored while the deletion ran (409 `collection_in_use` or the write
refused, never both stored and gone)."""

import asyncio
from typing import Any, NamedTuple

import pytest
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.datasets import service as datasets_service
from apiforge.datasets.sql import drop_indexes
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

pytestmark = pytest.mark.anyio

# How long a subscriber's write gets to land while the deletion is paused past its check: one
# that cannot (the deletion holds the collection) is released after it. Only the failing case
# before the fix depends on it; the outcome asserted holds whatever the wait.
LANDING_SECONDS = 1.0


async def _reached(point: asyncio.Event, request: "asyncio.Task[Any]") -> None:
    """Wait until `request` reaches `point`; it answering first is a failure, not a hang."""
    waiting = asyncio.create_task(point.wait())
    await asyncio.wait({waiting, request}, return_when=asyncio.FIRST_COMPLETED)
    assert point.is_set(), request.result().text


class Shared(NamedTuple):
    """A public notes app, its `notes` collection, and a subscriber's app key."""

    owner: User
    app_id: str
    dataset_id: str
    secret: str


@pytest.fixture
async def shared(client: AsyncClient) -> Shared:
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    _, secret = await app_key(client, consumer, app_id)
    listed = data_of(await client.get(f"/api/v1/datasets?appId={app_id}", headers=owner.headers))
    dataset_id = str(next(d["id"] for d in listed["list"] if d["name"] == "notes"))
    return Shared(owner, app_id, dataset_id, secret)


async def test_a_subscribers_record_stored_while_its_collection_is_deleted_is_never_taken(
    client: AsyncClient, shared: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, app_id, dataset_id, secret = shared

    checked, release = asyncio.Event(), asyncio.Event()
    original = drop_indexes

    async def paused(connection: AsyncConnection, collection_id: str) -> Any:
        """The deletion has looked for other workspaces' records: hold it there."""
        checked.set()
        await release.wait()
        return await original(connection, collection_id)

    monkeypatch.setattr("apiforge.datasets.service.drop_indexes", paused)
    deletion = asyncio.create_task(
        client.delete(f"/api/v1/datasets/{dataset_id}", headers=owner.headers)
    )
    await _reached(checked, deletion)
    adding = asyncio.create_task(call(client, secret, app_id, "addNote", {"text": "mine"}))
    await asyncio.wait({adding}, timeout=LANDING_SECONDS)
    release.set()
    deleted, added = await deletion, await adding

    if added.status_code == 200:  # the subscriber's record was stored: the deletion refuses
        assert_error(deleted, 409, "collection_in_use")
        listed = data_of(await call(client, secret, app_id, "listNotes"))
        assert [n["text"] for n in listed["notes"]["list"]] == ["mine"]
    else:  # the deletion went first: the write finds no collection (never a 500)
        assert data_of(deleted) == {"id": dataset_id}
        assert added.status_code == 404, added.text


async def test_a_subscribers_write_waits_for_a_deletion_past_its_check_then_is_a_404(
    client: AsyncClient, shared: Shared, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, app_id, dataset_id, secret = shared

    checked, release = asyncio.Event(), asyncio.Event()
    original = datasets_service.CollectionService._ensure_unshared

    async def paused(connection: AsyncConnection, collection: Any, workspace_id: str) -> None:
        """The deletion found no other workspace's record: hold it there."""
        await original(connection, collection, workspace_id)
        checked.set()
        await release.wait()

    monkeypatch.setattr(
        datasets_service.CollectionService, "_ensure_unshared", staticmethod(paused)
    )
    deletion = asyncio.create_task(
        client.delete(f"/api/v1/datasets/{dataset_id}", headers=owner.headers)
    )
    await _reached(checked, deletion)
    adding = asyncio.create_task(call(client, secret, app_id, "addNote", {"text": "mine"}))
    await asyncio.wait({adding}, timeout=LANDING_SECONDS)
    assert not adding.done(), adding.result().text  # it waits for the deletion's lock
    release.set()
    deleted, added = await deletion, await adding

    assert data_of(deleted) == {"id": dataset_id}
    assert added.status_code == 404, added.text
