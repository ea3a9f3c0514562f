"""On SQLite a prepared page's total is counted again only when its collection was written: the
triggers of migration 0009 number every collection's record writes, in the writing transaction,
whoever writes. A total must never be stale — after the gateway's own writes, after another
connection's insert, update or delete, after an update that moves a record in or out of the
filter — and the count statement must not run while nothing was written."""

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.core.db import sqlite_file
from apiforge.core.lazydb import WRITE_COUNTING_TRIGGERS, SqliteReader
from tests.e2e._apps import new_api
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import data_of
from tests.factories import register

FILTERED: dict[str, Any] = {
    "price": 10,
    "params": [],
    "steps": [
        {
            "id": "notes",
            "type": "getMany",
            "collection": "notes",
            "filter": {"text": {"_starts_with": "keep"}},
            "pageSize": 5,
        }
    ],
}


@contextmanager
def statements(app: FastAPI) -> Iterator[list[str]]:
    """The SQL the process's shared reader runs meanwhile."""
    reader = app.state.gateway_state.reader
    seen: list[str] = []
    db: sqlite3.Connection = reader._open()
    db.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        db.set_trace_callback(None)


def counts(seen: list[str]) -> int:
    return sum(1 for sql in seen if sql.lstrip().upper().startswith("SELECT COUNT(*)"))


async def publish(client: AsyncClient, headers: dict[str, str], app_id: str) -> None:
    body = {"bump": "minor", "notes": "first"}
    data_of(await client.post(f"/api/v1/apps/{app_id}/versions", json=body, headers=headers))


@pytest.fixture
def database(app: FastAPI) -> str:
    if app.state.gateway_state.reader is None:
        pytest.skip("the shared reader and its counted totals are SQLite's")
    path = sqlite_file(app.state.settings.resolved_database_url)
    assert path is not None
    return path


async def test_totals_follow_every_write_and_are_not_recounted_without_one(
    client: AsyncClient, app: FastAPI, database: str
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner, publish=False)
    await new_api(client, owner.headers, app_id, "keptNotes", **FILTERED)
    await publish(client, owner.headers, app_id)
    _, secret = await app_key(client, owner, app_id)

    async def total(api: str = "keptNotes") -> Any:
        page = data_of(await call(client, secret, app_id, api))["notes"]
        return page["totalCount"], sorted(n["text"] for n in page["list"])

    for text in ("keep 1", "keep 2", "drop 1"):
        data_of(await call(client, secret, app_id, "addNote", {"text": text}))
    assert await total() == (2, ["keep 1", "keep 2"])
    with statements(app) as seen:
        for _ in range(3):
            assert await total() == (2, ["keep 1", "keep 2"])
    assert counts(seen) == 0  # nothing written: the total is the one counted before

    # The gateway's own write.
    data_of(await call(client, secret, app_id, "addNote", {"text": "keep 3"}))
    with statements(app) as seen:
        assert (await total())[0] == 3
    assert counts(seen) == 1

    # Another connection's writes (a shell, another process): an update that moves a record
    # out of the filter, then one that moves another in, then a delete.
    with sqlite3.connect(database) as other:
        other.execute(
            "UPDATE records SET data = json_set(data, '$.text', 'drop 2') "
            "WHERE json_extract(data, '$.text') = 'keep 1'"
        )
    assert await total() == (2, ["keep 2", "keep 3"])
    with sqlite3.connect(database) as other:
        other.execute(
            "UPDATE records SET data = json_set(data, '$.text', 'keep 4') "
            "WHERE json_extract(data, '$.text') = 'drop 1'"
        )
    assert await total() == (3, ["keep 2", "keep 3", "keep 4"])
    with sqlite3.connect(database) as other:
        other.execute("DELETE FROM records WHERE json_extract(data, '$.text') = 'keep 2'")
    assert await total() == (2, ["keep 3", "keep 4"])
    # The unfiltered page of the same collection follows too.
    assert await total("listNotes") == (3, ["drop 2", "keep 3", "keep 4"])


async def test_a_call_that_wrote_counts_its_own_writes_and_caches_nothing(
    client: AsyncClient, app: FastAPI, database: str
) -> None:
    """After a write the call's reads run on its own connection, inside its transaction: the
    total includes its uncommitted insert, and no total is kept from that transaction."""
    owner = await register(client)
    app_id = await notes_app(client, owner, publish=False)
    steps = [
        {"id": "added", "type": "insert", "collection": "notes", "data": {"text": "keep x"}},
        {**FILTERED["steps"][0], "id": "notes"},
        {"id": "fail", "type": "throw", "status": 409, "error": "stop", "message": "stop"},
    ]
    await new_api(client, owner.headers, app_id, "keptNotes", **FILTERED)
    await new_api(
        client, owner.headers, app_id, "addThenList", params=[], steps=steps[:2], price=10
    )
    await new_api(client, owner.headers, app_id, "addThenFail", params=[], steps=steps, price=10)
    await publish(client, owner.headers, app_id)
    _, secret = await app_key(client, owner, app_id)
    page = data_of(await call(client, secret, app_id, "keptNotes"))["notes"]
    assert page["totalCount"] == 0
    listed = data_of(await call(client, secret, app_id, "addThenList"))
    assert listed["notes"]["totalCount"] == 1
    failed = await call(client, secret, app_id, "addThenFail")
    assert failed.status_code == 409
    page = data_of(await call(client, secret, app_id, "keptNotes"))["notes"]
    assert page["totalCount"] == 1  # the failed call's insert was rolled back, and not counted


async def test_the_reader_counts_on_the_triggers_only_where_they_exist(
    app: FastAPI, database: str, tmp_path: Path
) -> None:
    reader = app.state.gateway_state.reader
    reader._open()
    assert reader.writes_counted  # migrated to head: all three
    bare = tmp_path / "bare.db"
    with sqlite3.connect(bare) as db:
        db.execute("CREATE TABLE records (id TEXT, collection_id TEXT)")
        db.execute("CREATE TABLE collection_writes (collection_id TEXT, writes INTEGER)")
        for name in WRITE_COUNTING_TRIGGERS[:2]:  # one missing: a copy that lost it
            db.execute(f"CREATE TRIGGER {name} AFTER DELETE ON records BEGIN SELECT 1; END")
    partial = SqliteReader(str(bare))
    try:
        partial._open()
        assert partial.writes_counted is False  # every total is then counted again
    finally:
        await partial.close()
