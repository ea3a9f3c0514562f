"""Lock order of a `jwtRevoke` and the deletion of its app or of the calling workspace (the
revocation's row refers to both). The call holds what it locked (its revocation, or a record
written before it) when the deletion starts; either the call commits first (200) or finds its
app or workspace gone (404) — never a deadlock PostgreSQL breaks by failing one of them, nor a
foreign key's 500 — and the deletion commits, taking the revocation with it."""

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, or_, select

from apiforge.builder.models import App, EndUserTokenRevocation
from apiforge.datasets.store import RecordStore
from apiforge.engine.steps import auth as auth_steps
from tests.e2e._apps import in_workspace, new_api, new_app
from tests.e2e._billing import ledger_invariants, top_up
from tests.e2e._deletion import paused_race
from tests.e2e._keys import call, create_key, subscribe
from tests.e2e._workspaces import data_of, deleted_before_steps, new_workspace
from tests.factories import User, make_admin, register

PRICE = 10
REVOKE = {"id": "out", "type": "jwtRevoke", "sub": "u1"}
INSERT = {"id": "note", "type": "insert", "collection": "notes", "data": {"text": "new"}}
# api -> (steps, where the call pauses: after its revocation, or after its record's insert)
APIS: dict[str, tuple[list[Any], tuple[Any, str]]] = {
    "signOut": ([REVOKE], (auth_steps, "revoke_tokens")),
    "noteThenSignOut": ([INSERT, REVOKE], (RecordStore, "insert")),
}


@dataclass
class Scene:
    builder: User
    consumer: User
    app_id: str
    builds: str  # the workspace owning the app
    caller: str  # the calling workspace
    secret: str


async def _scene(app: FastAPI, client: AsyncClient) -> Scene:
    admin = await make_admin(app, client)
    builder, consumer = await register(client), await register(client)
    builds = await new_workspace(client, builder, "Builder")
    caller = await new_workspace(client, consumer, "Caller")
    headers = in_workspace(builder, builds)
    app_id = await new_app(client, headers, "Sessions", visibility="public")
    # Indexed, as in the workspace deletion's tests: dropping its index holds the records table
    # first. (Unindexed, the insert's hold of the app's workspace row is what orders the two:
    # test_review_workspace_delete_lock_order.py.)
    fields = [{"name": "text", "type": "string", "indexed": True}]
    body = {"appId": app_id, "name": "notes", "fields": fields}
    data_of(await client.post("/api/v1/datasets", json=body, headers=headers))
    for api, (steps, _) in APIS.items():
        await new_api(client, headers, app_id, api, steps=steps, price=PRICE)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=headers
    )
    data_of(published)
    await top_up(client, admin, builds, 1)  # its earnings wallet exists
    calling = in_workspace(consumer, caller)
    await subscribe(client, calling, app_id)
    _, secret = await create_key(client, calling, type="app", appId=app_id)
    await top_up(client, admin, caller, 10 * PRICE)
    return Scene(builder, consumer, app_id, builds, caller, secret)


def _deletion(client: AsyncClient, s: Scene, what: str) -> Awaitable[Response]:
    if what == "app":
        headers = in_workspace(s.builder, s.builds)
        return client.delete(f"/api/v1/apps/{s.app_id}?force=true", headers=headers)
    if what == "caller":
        return client.delete(f"/api/v1/workspaces/{s.caller}", headers=s.consumer.headers)
    return client.delete(f"/api/v1/workspaces/{s.builds}?force=true", headers=s.builder.headers)


async def _revocations_left(app: FastAPI, s: Scene) -> int:
    table = EndUserTokenRevocation
    async with app.state.engine.connect() as conn:
        count = await conn.scalar(
            select(func.count())
            .select_from(table)
            .where(or_(table.app_id == s.app_id, table.workspace_id == s.caller))
        )
    return int(count or 0)


@pytest.mark.parametrize("what", ["app", "caller", "builder"])
@pytest.mark.parametrize("api", list(APIS))
async def test_a_revocation_and_a_deletion_do_not_deadlock(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, api: str, what: str
) -> None:
    s = await _scene(app, client)
    target, name = APIS[api][1]
    answered, deleted = await paused_race(
        monkeypatch,
        target,
        name,
        lambda: call(client, s.secret, s.app_id, api),
        lambda: _deletion(client, s, what),
    )
    data_of(deleted)
    # 401: the caller's deletion took its key before the call's charge re-read it.
    assert answered.status_code in (200, 401, 404), answered.text
    if answered.status_code == 404:
        reason = answered.json()["data"]["error"]
        assert reason in ("app_not_found", "workspace_not_found"), answered.text
    await ledger_invariants(app)
    assert await _revocations_left(app, s) == 0


@pytest.mark.parametrize(
    ("what", "reason"), [("app", "app_not_found"), ("caller", "workspace_not_found")]
)
async def test_a_revocation_whose_app_or_workspace_went_before_its_steps_is_a_404(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, what: str, reason: str
) -> None:
    s = await _scene(app, client)
    before = await ledger_invariants(app)
    row_id, model = (s.app_id, App) if what == "app" else (s.caller, None)
    answered = await deleted_before_steps(
        app,
        monkeypatch,
        row_id,
        lambda: call(client, s.secret, s.app_id, "signOut"),
        **({"model": model} if model is not None else {}),
    )
    assert answered.status_code == 404, answered.text
    assert answered.json()["data"]["error"] == reason
    assert await ledger_invariants(app) == before
    assert await _revocations_left(app, s) == 0
