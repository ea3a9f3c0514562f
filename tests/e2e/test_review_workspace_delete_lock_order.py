"""Lock order of a workspace's deletion and a gateway call writing into that workspace
(PostgreSQL; SQLite has one writer). The call holds what its first write locked (the records
table, the collection's row, its record) when the deletion starts; the deletion then goes as far
as it can, and the call goes on to what it writes next (a right of the app's user system, its
charge). Either order of the two must end in a committed deletion (200) and a call that either
committed first (200) or found its workspace or app gone (404) — never a deadlock PostgreSQL
breaks by failing one of them (500) — with the ledger balanced and nothing half-charged."""

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from apiforge.datasets.models import Record
from apiforge.datasets.store import RecordStore
from tests.e2e._apps import in_workspace, new_api, new_app
from tests.e2e._billing import ledger_invariants, top_up
from tests.e2e._deletion import (
    GRANT,
    ID,
    INDEXED,
    INSERT,
    PRICE,
    TALLY,
    UPDATE,
    paused_race,
)
from tests.e2e._keys import call, create_key, subscribe
from tests.e2e._workspaces import data_of, deleted_before_steps, new_workspace
from tests.factories import User, make_admin, register

# api -> (params, steps, price, the RecordStore method after which the call pauses)
APIS: dict[str, tuple[list[Any], list[Any], int, str]] = {
    "tally": ([], [TALLY], PRICE, "count"),  # reads only, then its charge
    "add": ([], [INSERT], PRICE, "insert"),
    "touch": ([ID], [UPDATE], PRICE, "update"),
    "signUp": ([], [INSERT, GRANT], PRICE, "insert"),
    "touchAndGrant": ([ID], [UPDATE, GRANT], PRICE, "update"),
}


@dataclass
class Scene:
    admin: User
    builder: User
    consumer: User
    app_id: str
    caller: str  # the calling workspace
    secret: str
    record_id: str  # a record of the caller's partition


async def _notes_app(
    client: AsyncClient, owner: User, workspace_id: str, fields: list[dict[str, Any]]
) -> str:
    headers = in_workspace(owner, workspace_id)
    app_id = await new_app(client, headers, "Notes", visibility="public")
    body = {"appId": app_id, "name": "notes", "fields": fields}
    data_of(await client.post("/api/v1/datasets", json=body, headers=headers))
    for api, (params, steps, price, _) in APIS.items():
        await new_api(client, headers, app_id, api, params=params, steps=steps, price=price)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=headers
    )
    data_of(published)
    return app_id


async def _scene(
    app: FastAPI,
    client: AsyncClient,
    *,
    own_app: bool = False,
    fields: list[dict[str, Any]] = INDEXED["indexed"],
) -> Scene:
    """A builder's team workspace owning the app, and a consumer's team workspace calling it
    (`own_app`: the consumer's team owns the app it calls), funded, with one record. Indexed
    `fields` by default: dropping the index, the deletion waits for the records table first."""
    admin = await make_admin(app, client)
    builder, consumer = await register(client), await register(client)
    caller = await new_workspace(client, consumer, "Caller")
    if own_app:
        builder, builds = consumer, caller
    else:
        builds = await new_workspace(client, builder, "Builder")
    app_id = await _notes_app(client, builder, builds, fields)
    await top_up(client, admin, builds, 1)  # its earnings wallet exists
    headers = in_workspace(consumer, caller)
    await subscribe(client, headers, app_id)
    _, secret = await create_key(client, headers, type="app", appId=app_id)
    await top_up(client, admin, caller, 10 * PRICE)
    added = await call(client, secret, app_id, "add")
    return Scene(admin, builder, consumer, app_id, caller, secret, data_of(added)["note"]["id"])


async def _records_of(app: FastAPI, partition: str) -> int:
    async with app.state.engine.connect() as conn:
        stmt = select(func.count()).select_from(Record).where(Record.partition == partition)
        return int(await conn.scalar(stmt) or 0)


def _args(api: str, s: Scene) -> dict[str, Any]:
    return {"id": s.record_id} if APIS[api][0] else {}


def _deletion(client: AsyncClient, s: Scene, by: str) -> Awaitable[Response]:
    """The caller's workspace deleted by its owner, or with its owner's account."""
    if by == "account":
        url = f"/api/v1/admin/users/{s.consumer.account_id}?force=true"
        return client.delete(url, headers=s.admin.headers)
    return client.delete(f"/api/v1/workspaces/{s.caller}", headers=s.consumer.headers)


@pytest.mark.parametrize("by", ["workspace", "account"])
@pytest.mark.parametrize("api", list(APIS))
async def test_a_call_writing_into_its_workspace_and_its_deletion_do_not_deadlock(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, api: str, by: str
) -> None:
    s = await _scene(app, client)
    answered, deleted = await paused_race(
        monkeypatch,
        RecordStore,
        APIS[api][3],
        lambda: call(client, s.secret, s.app_id, api, _args(api, s)),
        lambda: _deletion(client, s, by),
    )
    data_of(deleted)
    assert answered.status_code in (200, 401, 404), answered.text
    await ledger_invariants(app)
    assert await _records_of(app, s.caller) == 0  # nothing of the deleted workspace stays


@pytest.mark.parametrize("api", list(APIS))
async def test_a_call_writing_into_an_app_and_the_deletion_of_the_apps_workspace(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    s = await _scene(app, client)
    answered, deleted = await paused_race(
        monkeypatch,
        RecordStore,
        APIS[api][3],
        lambda: call(client, s.secret, s.app_id, api, _args(api, s)),
        lambda: _delete_builder(client, s),
    )
    data_of(deleted)
    assert answered.status_code in (200, 404), answered.text
    await ledger_invariants(app)


@pytest.mark.parametrize("whose", ["builder", "caller"])
@pytest.mark.parametrize("api", ["add", "touch", "signUp", "touchAndGrant"])
async def test_a_write_into_an_unindexed_collection_and_a_workspaces_deletion(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, api: str, whose: str
) -> None:
    """No index to drop: the deletion holds no records table, only its workspace's row, which
    the call's first write must already hold (the app's workspace as well as the caller's)."""
    s = await _scene(app, client, fields=INDEXED["unindexed"])
    answered, deleted = await paused_race(
        monkeypatch,
        RecordStore,
        APIS[api][3],
        lambda: call(client, s.secret, s.app_id, api, _args(api, s)),
        lambda: (
            _delete_builder(client, s) if whose == "builder" else _deletion(client, s, "workspace")
        ),
    )
    data_of(deleted)
    # 401: the caller's deletion took its key before the call's charge re-read it.
    allowed = (200, 404) if whose == "builder" else (200, 401, 404)
    assert answered.status_code in allowed, answered.text
    await ledger_invariants(app)
    assert await _records_of(app, s.caller) == 0  # either deletion takes the caller's records


async def _delete_builder(client: AsyncClient, s: Scene) -> Response:
    listed = data_of(await client.get("/api/v1/workspaces", headers=s.builder.headers))
    team = next(w["id"] for w in listed["list"] if not w["personal"])
    return await client.delete(f"/api/v1/workspaces/{team}?force=true", headers=s.builder.headers)


@pytest.mark.parametrize("api", list(APIS))
async def test_a_call_writing_into_its_own_app_and_its_workspaces_deletion(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    s = await _scene(app, client, own_app=True)
    answered, deleted = await paused_race(
        monkeypatch,
        RecordStore,
        APIS[api][3],
        lambda: call(client, s.secret, s.app_id, api, _args(api, s)),
        lambda: client.delete(f"/api/v1/workspaces/{s.caller}", headers=s.consumer.headers),
    )
    data_of(deleted)
    assert answered.status_code in (200, 401, 404), answered.text
    await ledger_invariants(app)


@pytest.mark.parametrize("whose", ["caller", "builder"])
@pytest.mark.parametrize("api", list(APIS))
async def test_a_call_whose_workspace_went_before_its_writes_is_a_404(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, api: str, whose: str
) -> None:
    s = await _scene(app, client)
    before = await ledger_invariants(app)
    records = await _records_of(app, s.caller)
    if whose == "caller":
        workspace_id = s.caller
    else:
        listed = data_of(await client.get("/api/v1/workspaces", headers=s.builder.headers))
        workspace_id = next(w["id"] for w in listed["list"] if not w["personal"])
    answered = await deleted_before_steps(
        app, monkeypatch, workspace_id, lambda: call(client, s.secret, s.app_id, api, _args(api, s))
    )
    assert answered.status_code == 404, answered.text
    assert await ledger_invariants(app) == before
    if whose == "caller":
        assert await _records_of(app, s.caller) == records  # nothing written into it
