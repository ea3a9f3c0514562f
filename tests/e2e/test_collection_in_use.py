"""Deleting a collection other workspaces keep records in takes their records: only on purpose
(409 `collection_in_use` unless `?force=true`), as deleting the app itself."""

import pytest
from httpx import AsyncClient

from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register

pytestmark = pytest.mark.anyio


async def _notes_collection(client: AsyncClient, headers: dict[str, str], app_id: str) -> str:
    listed = data_of(await client.get(f"/api/v1/datasets?appId={app_id}", headers=headers))
    return str(next(d["id"] for d in listed["list"] if d["name"] == "notes"))


async def test_a_collection_others_keep_records_in_is_deleted_only_with_force(
    client: AsyncClient,
) -> None:
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    _, own_secret = await app_key(client, owner, app_id)
    data_of(await call(client, own_secret, app_id, "addNote", {"text": "the owner's"}))
    _, secret = await app_key(client, consumer, app_id)
    data_of(await call(client, secret, app_id, "addNote", {"text": "mine"}))
    dataset_id = await _notes_collection(client, owner.headers, app_id)
    path = f"/api/v1/datasets/{dataset_id}"

    for query in ("", "?force=false", "?force=0"):
        assert_error(
            await client.delete(path + query, headers=owner.headers), 409, "collection_in_use"
        )
    assert_error(
        await client.delete(path + "?force=maybe", headers=owner.headers), 400, "invalid_input"
    )
    listed = data_of(await call(client, secret, app_id, "listNotes"))
    assert [n["text"] for n in listed["notes"]["list"]] == ["mine"]  # nothing went

    assert data_of(await client.delete(path + "?force=true", headers=owner.headers)) == {
        "id": dataset_id
    }
    assert_error(await client.get(path, headers=owner.headers), 404, "dataset_not_found")


async def test_the_owners_own_records_do_not_hold_a_delete(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, secret = await app_key(client, owner, app_id)
    data_of(await call(client, secret, app_id, "addNote", {"text": "mine"}))
    dataset_id = await _notes_collection(client, owner.headers, app_id)
    deleted = await client.delete(f"/api/v1/datasets/{dataset_id}", headers=owner.headers)
    assert data_of(deleted) == {"id": dataset_id}
