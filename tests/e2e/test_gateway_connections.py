"""A gateway call checks a pooled connection out only when it makes a statement: a warm call
(key, subscription, app and plan cached) whose reads are prepared pages makes none — on SQLite
its reads go to the process's shared read-only connection — while a call that writes uses its
own connection and sees its own writes, and a failed call leaves nothing behind."""

from fastapi import FastAPI
from httpx import AsyncClient

from tests.e2e._asgi import pool_checkouts
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import data_of
from tests.factories import make_admin, register


async def test_a_warm_read_only_call_checks_out_no_connection(
    client: AsyncClient, app: FastAPI
) -> None:
    """Free calls: a charged one commits its charge, so it needs its connection at the end."""
    admin = await make_admin(app, client)
    for step_type in ("getMany", "insert"):
        free = await client.put(
            f"/api/v1/admin/pricing/{step_type}", json={"cost": 0}, headers=admin.headers
        )
        data_of(free)
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, secret = await app_key(client, owner, app_id)
    data_of(await call(client, secret, app_id, "addNote", {"text": "first"}))
    assert data_of(await call(client, secret, app_id, "listNotes"))["notes"]["totalCount"] == 1
    reader = app.state.gateway_state.reader
    with pool_checkouts(app) as seen:
        listed = data_of(await call(client, secret, app_id, "listNotes"))
    assert [n["text"] for n in listed["notes"]["list"]] == ["first"]
    if reader is None:  # PostgreSQL: the page runs on the call's own connection
        assert len(seen) == 1
    else:
        assert seen == []
    with pool_checkouts(app) as seen:  # a write needs the call's connection
        data_of(await call(client, secret, app_id, "addNote", {"text": "second"}))
    assert len(seen) == 1
    listed = data_of(await call(client, secret, app_id, "listNotes"))
    assert sorted(n["text"] for n in listed["notes"]["list"]) == ["first", "second"]


async def test_reads_after_a_write_in_the_same_call_see_it(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner, publish=False)
    steps = [
        {"id": "before", "type": "getMany", "collection": "notes"},
        {"id": "added", "type": "insert", "collection": "notes", "data": {"text": "mine"}},
        {"id": "after", "type": "getMany", "collection": "notes"},
        {"id": "fail", "type": "throw", "status": 409, "error": "stop", "message": "stop"},
    ]
    body = {"api": "probe", "steps": steps[:3], "price": 10}
    data_of(await client.post(f"/api/v1/apps/{app_id}/apis", json=body, headers=owner.headers))
    run = {"appId": app_id, "api": "probe", "version": "dev", "args": {}}
    data = data_of(await client.post("/api/v1/invocations", json=run, headers=owner.headers))
    assert data["before"]["totalCount"] == 0
    assert [n["text"] for n in data["after"]["list"]] == ["mine"]
    # A call that writes and then fails leaves nothing: its connection was rolled back.
    body = {"api": "failing", "steps": steps[1:], "price": 10}
    data_of(await client.post(f"/api/v1/apps/{app_id}/apis", json=body, headers=owner.headers))
    failed = await client.post(
        "/api/v1/invocations", json={**run, "api": "failing"}, headers=owner.headers
    )
    assert failed.status_code == 409
    data = data_of(await client.post("/api/v1/invocations", json=run, headers=owner.headers))
    assert data["before"]["totalCount"] == 1
