"""Review: the records/storageBytes meter counts a write still in flight (reserved, its
transaction not yet ended) until that transaction ends, so a snapshot read while it is open
(a background refresh, or the inline re-read of a long-idle entry) cannot drop it: within one
process the quota admits no record past it. A write that rolls back frees its room at once.

The seam: a record insert is held after its statement, before its transaction commits, while
another insert makes the meter read its snapshot."""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from apiforge.datasets.models import Record
from apiforge.datasets.store import RecordStore
from apiforge.plans.meter import QuotaMeter, quota_meter
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import make_admin, register

Insert = Callable[[str], Awaitable[Response]]


class _Gate:
    """Holds the next record insert, once armed, after its statement and before its commit."""

    def __init__(self) -> None:
        self.armed = False
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def pause(self) -> None:
        if self.armed:
            self.armed = False
            self.reached.set()
            await self.release.wait()


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> _Gate:
    gate = _Gate()
    original = RecordStore.insert

    async def held(self: RecordStore, *args: Any, **kwargs: Any) -> dict[str, Any]:
        record = await original(self, *args, **kwargs)
        await gate.pause()
        return record

    monkeypatch.setattr(RecordStore, "insert", held)
    return gate


def _decisions(monkeypatch: pytest.MonkeyPatch, meter: QuotaMeter) -> asyncio.Queue[bool]:
    """A queue that gets one item per `records` check the meter decides (True: admitted)."""
    decided: asyncio.Queue[bool] = asyncio.Queue()
    original = meter.reserve_stock

    async def watched(*args: Any, **kwargs: Any) -> None:
        try:
            await original(*args, **kwargs)
        except BaseException:
            decided.put_nowait(False)
            raise
        decided.put_nowait(True)

    monkeypatch.setattr(meter, "reserve_stock", watched)
    return decided


async def _gateway_inserts(app: FastAPI, client: AsyncClient, **quotas: int) -> tuple[str, Insert]:
    """A consumer's partition on a plan with `quotas`, filled by a builder's app over the
    gateway: (its workspace id, an insert of one note)."""
    builder, consumer = await register(client), await register(client)
    app_id = await notes_app(client, builder, visibility="public")
    _, secret = await app_key(client, consumer, app_id)
    await on_plan(client, await make_admin(app, client), consumer.workspace_id, "small", **quotas)

    def insert(text: str) -> Awaitable[Response]:
        return call(client, secret, app_id, "addNote", {"text": text})

    return consumer.workspace_id, insert


async def _management_inserts(
    app: FastAPI, client: AsyncClient, *, workflow: bool = False, **quotas: int
) -> tuple[str, Insert]:
    """A workspace on a plan with `quotas`, filled through `POST /datasets/{id}/records` (in
    the request's session), or with `workflow` by an `insert` step of `POST /workflows`."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    body = {"appId": app_id, "name": "notes", "fields": [{"name": "text", "type": "string"}]}
    created = await client.post("/api/v1/datasets", json=body, headers=owner.headers)
    url = f"/api/v1/datasets/{data_of(created)['id']}/records"
    await on_plan(client, await make_admin(app, client), owner.workspace_id, "small", **quotas)

    def insert(text: str) -> Awaitable[Response]:
        if not workflow:
            return client.post(url, json={"text": text}, headers=owner.headers)
        step = {"id": "note", "type": "insert", "collection": "notes", "data": {"text": text}}
        run = {"appId": app_id, "steps": [step], "args": {}}
        return client.post("/api/v1/workflows", json=run, headers=owner.headers)

    return owner.workspace_id, insert


async def _workflow_inserts(app: FastAPI, client: AsyncClient, **quotas: int) -> tuple[str, Insert]:
    return await _management_inserts(app, client, workflow=True, **quotas)


SETUPS = {
    "gateway": _gateway_inserts,
    "management": _management_inserts,
    "workflow": _workflow_inserts,
}


async def _stored(app: FastAPI, partition: str) -> int:
    async with app.state.engine.connect() as connection:
        stmt = select(func.count()).select_from(Record).where(Record.partition == partition)
        return int(await connection.scalar(stmt) or 0)


def _refused(response: Response, limit: int) -> None:
    data = assert_error(response, 403, "quota_exceeded")
    assert (data["quota"], data["limit"], data["used"]) == ("records", limit, limit)


@pytest.mark.parametrize("path", list(SETUPS))
@pytest.mark.parametrize(
    ("reload", "staleness"),
    # 1.5 periods: a background refresh (the check answers from the stale entry meanwhile);
    # 2.5 periods: an idle entry, re-read inline before the check answers.
    [("background", 1.5), ("inline", 2.5)],
)
async def test_a_write_in_flight_while_the_snapshot_is_read_still_counts(
    app: FastAPI,
    client: AsyncClient,
    gate: _Gate,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    reload: str,
    staleness: float,
) -> None:
    workspace_id, insert = await SETUPS[path](app, client, records=2)
    meter = quota_meter(app.state.engine)
    assert (await insert("first")).status_code == 200  # 1 of 2, and the meter's snapshot
    decided = _decisions(monkeypatch, meter)

    gate.armed = True
    held = asyncio.ensure_future(insert("second"))  # 2 of 2: reserved, not yet committed
    await gate.reached.wait()
    assert await decided.get() is True
    meter._stock[workspace_id].loaded = time.monotonic() - meter.usage_ttl * staleness
    # This insert makes the meter read its snapshot while the second record is uncommitted:
    # the database holds one record, and the second is still in flight.
    racing = asyncio.ensure_future(insert("third"))
    await decided.get()
    await asyncio.gather(*meter._tasks)  # the background refresh lands (if one started)
    gate.release.set()
    assert (await held).status_code == 200
    _refused(await racing, 2)
    # Committed since the snapshot, the second record counts as the database's own would.
    _refused(await insert("fourth"), 2)
    assert await _stored(app, workspace_id) == 2


async def test_a_write_that_rolls_back_frees_its_room_at_once(
    app: FastAPI, client: AsyncClient
) -> None:
    """A call that inserts and then fails commits nothing, so its record never counts: the
    next insert fits at once, without waiting for the next snapshot."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    body = {"appId": app_id, "name": "notes", "fields": [{"name": "text", "type": "string"}]}
    created = await client.post("/api/v1/datasets", json=body, headers=owner.headers)
    url = f"/api/v1/datasets/{data_of(created)['id']}/records"
    steps = [
        {"id": "note", "type": "insert", "collection": "notes", "data": {"text": "x"}},
        {"id": "fail", "type": "throw", "status": 409, "error": "stop", "message": "stop"},
    ]
    await new_api(client, owner.headers, app_id, "noteThenFail", steps=steps, price=100)
    await on_plan(client, await make_admin(app, client), owner.workspace_id, "one", records=1)
    dev = {"appId": app_id, "api": "noteThenFail", "version": "dev", "args": {}}
    failed = await client.post("/api/v1/invocations", json=dev, headers=owner.headers)
    assert_error(failed, 409, "stop")
    assert await _stored(app, owner.workspace_id) == 0
    assert (await client.post(url, json={"text": "a"}, headers=owner.headers)).status_code == 200
    _refused(await client.post(url, json={"text": "b"}, headers=owner.headers), 1)
    assert await _stored(app, owner.workspace_id) == 1
