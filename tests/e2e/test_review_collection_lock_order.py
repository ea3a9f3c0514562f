"""Lock order of record writes and schema changes (PostgreSQL): the collection's row, then its
records. A schema change builds or drops the records table's indexes before it holds the row, so
a write takes its own lock on the table before it holds the row too; a record delete holds the
row as a write does, since the same call may write after it. Either out of order was a deadlock
(one of them a 500): a write holding the row waited for the table an index change held while
the change waited for the row; a change holding the row waited to erase a value of the record a
call had deleted, while the call's next insert waited for the row; a change holding the app
while it waited for a call's records (their table, their row) and the call, granting a right of
the app's user system next, waited for the app (the lock a schema change takes on the app no
longer holds up a row referring to it)."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from httpx import AsyncClient, Response

from apiforge.datasets import service as datasets_service
from apiforge.datasets.store import RecordStore
from tests.conftest import DATABASE_URL
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import call, create_key
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

pytestmark = pytest.mark.anyio

# How long the change gets to reach the row lock while the write holds the row: one that cannot
# (it waits for the write's lock on the records table; SQLite: the write lock) goes on after it.
# The outcome asserted holds whatever the wait.
REACHING_SECONDS = 1.0

TEXT: dict[str, Any] = {"name": "text", "type": "string", "required": True}
TAG: dict[str, Any] = {"name": "tag", "type": "string", "indexed": True}
# Each removes or changes `tag` (the row lock) and drops or builds an index (the table's lock);
# None deletes the dataset (its indexes dropped, then the row held).
# Where a record write holds the row: `_hold_fields`; SQLite's insert with a current schema
# reads no fields, and its statement takes the write lock (conditional on the collection's
# version, `RecordStore._unheld`).
HOLDING_WRITE = "_hold_fields" if DATABASE_URL.startswith("postgresql") else "_write"
CHANGES: dict[str, list[dict[str, Any]] | None] = {
    "remove": [TEXT],
    "retype": [TEXT, {**TAG, "type": "integer"}],
    "remove and index": [{**TEXT, "indexed": True}],
    "delete": None,
}
SWAP = [  # delete a note, then add one: the call holds the deleted record before the insert
    {"id": "gone", "type": "delete", "collection": "notes", "recordId": {"expr": "args.id"}},
    {"id": "note", "type": "insert", "collection": "notes", "data": {"text": "new"}},
]
ID = {"name": "id", "type": "string", "required": True, "max": 64}
SIGN_UP = [  # a record, then a right of the app's user system (its row refers to the app)
    {"id": "note", "type": "insert", "collection": "notes", "data": {"text": "new"}},
    {
        "id": "right",
        "type": "userRight",
        "action": "grant",
        "userId": "u1",
        "target": "notes",
        "rights": ["read"],
    },
]


async def _notes(client: AsyncClient, tag: dict[str, Any]) -> tuple[User, str, str]:
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Notes")
    body = {"appId": app_id, "name": "notes", "fields": [TEXT, tag]}
    created = await client.post("/api/v1/datasets", json=body, headers=owner.headers)
    return owner, app_id, str(data_of(created)["id"])


def _change(
    client: AsyncClient, owner: User, dataset_id: str, fields: list[dict[str, Any]] | None
) -> "asyncio.Future[Response]":
    url, headers = f"/api/v1/datasets/{dataset_id}", {**owner.headers, "If-Match": "*"}
    if fields is None:
        return asyncio.ensure_future(client.delete(url, headers=headers))
    body = {"name": "notes", "fields": fields}
    return asyncio.ensure_future(client.put(url, json=body, headers=headers))


async def _race(
    monkeypatch: pytest.MonkeyPatch,
    method: str,
    write: Callable[[], Awaitable[Response]],
    change: Callable[[], Awaitable[Response]],
) -> tuple[Response, Response]:
    """Pause `write` once `RecordStore.<method>` returned (holding what it locked), start
    `change`, let it go on to the collection's row lock (or wait behind the write), release."""
    holding, release, reached = asyncio.Event(), asyncio.Event(), asyncio.Event()
    original, hold = getattr(RecordStore, method), datasets_service.CollectionService._hold

    async def paused(self: RecordStore, *args: Any, **kwargs: Any) -> Any:
        result = await original(self, *args, **kwargs)
        if not holding.is_set():
            holding.set()
            await release.wait()
        return result

    async def reaching(self: Any, collection: Any) -> None:
        reached.set()
        await hold(self, collection)

    monkeypatch.setattr(RecordStore, method, paused)
    monkeypatch.setattr(datasets_service.CollectionService, "_hold", reaching)
    writing = asyncio.ensure_future(write())
    waiting = asyncio.ensure_future(holding.wait())
    await asyncio.wait({waiting, writing}, return_when=asyncio.FIRST_COMPLETED)
    assert holding.is_set(), writing.result().text  # it answering first is a failure
    changing = asyncio.ensure_future(change())
    await asyncio.wait({asyncio.ensure_future(reached.wait()), changing}, timeout=REACHING_SECONDS)
    release.set()
    return await writing, await changing


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_write_holding_the_row_and_an_index_change_do_not_deadlock(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    owner, _, dataset_id = await _notes(client, TAG)
    url = f"/api/v1/datasets/{dataset_id}"
    written, changed = await _race(
        monkeypatch,
        HOLDING_WRITE,
        lambda: client.post(
            f"{url}/records", json={"text": "n", "tag": "a"}, headers=owner.headers
        ),
        lambda: _change(client, owner, dataset_id, CHANGES[change]),
    )

    data_of(written)
    # The write committed first: the change saw its value (erased with the field, or refused).
    if change == "retype":
        assert_error(changed, 409, "field_has_values")
    else:
        data_of(changed)
    if change in ("remove", "remove and index"):
        records = await client.get(f"{url}/records", headers=owner.headers)
        assert [r.get("tag") for r in data_of(records)["list"]] == [None]


async def test_a_call_deleting_then_inserting_and_a_field_removal_do_not_deadlock(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner, app_id, dataset_id = await _notes(client, {"name": "tag", "type": "string"})
    await new_api(client, owner.headers, app_id, "swapNote", params=[ID], steps=SWAP, price=100)
    url = f"/api/v1/datasets/{dataset_id}"
    tagged = await client.post(
        f"{url}/records", json={"text": "t", "tag": "a"}, headers=owner.headers
    )
    _, secret = await create_key(client, owner.headers, type="ws", role="admin")
    args = {"id": data_of(tagged)["id"]}
    swapped, changed = await _race(
        monkeypatch,
        "delete",
        lambda: call(client, secret, app_id, "swapNote", args, version="dev"),
        lambda: _change(client, owner, dataset_id, [TEXT]),
    )

    data_of(swapped)
    data_of(changed)
    records = await client.get(f"{url}/records", headers=owner.headers)
    assert [r["text"] for r in data_of(records)["list"]] == ["new"]


@pytest.mark.parametrize("indexed", [False, True])
async def test_a_call_writing_then_granting_a_right_and_a_field_removal_do_not_deadlock(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch, indexed: bool
) -> None:
    owner, app_id, dataset_id = await _notes(client, {**TAG, "indexed": indexed})
    await new_api(client, owner.headers, app_id, "signUp", params=[], steps=SIGN_UP, price=100)
    _, secret = await create_key(client, owner.headers, type="ws", role="admin")
    signed, changed = await _race(
        monkeypatch,
        "insert",
        lambda: call(client, secret, app_id, "signUp", version="dev"),
        lambda: _change(client, owner, dataset_id, [TEXT]),
    )

    assert data_of(signed)["right"] == ["read"]
    data_of(changed)
