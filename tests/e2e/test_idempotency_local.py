"""Idempotency keys on the embedded database: the process that owns the answer log claims a
gateway key in memory, and the answer is appended to the log by the transaction of the call's
charge (a read-only call, on the charges' writer) or of its effects (a call that wrote). The
answer must commit with them, a key must run once, a key that another process holds by the time
the answer is written must refuse the call with nothing charged or changed, and answers must be
replayed after a restart and after a crash (idempotency/answer_log.py)."""

import asyncio
import os
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from apiforge.core.db import sqlite_file
from apiforge.core.settings import Settings
from apiforge.gateway.stages.idempotency import idempotency_store
from apiforge.idempotency import local_claims
from apiforge.idempotency.answer_log import AnswerLog, Stored
from apiforge.idempotency.keys import fingerprint, fingerprint_key, record_id
from apiforge.idempotency.known import KnownKeys
from apiforge.idempotency.models import IdempotencyRecord
from tests._servers import running_servers
from tests.e2e._apps import new_api, new_app
from tests.e2e._billing import balances, ledger_invariants
from tests.e2e._idempotency import hit, hits_app, total
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

KEY = "Idempotency-Key"


@pytest.fixture(autouse=True)
def embedded(app: FastAPI) -> None:
    if app.state.gateway_state.reader is None:
        pytest.skip("claims in process memory are the embedded database's")


async def _setup(client: AsyncClient) -> tuple[str, User, str, str]:
    owner, consumer = await register(client), await register(client)
    app_id = await hits_app(client, owner)
    key_id, secret = await app_key(client, consumer, app_id)
    return app_id, consumer, key_id, secret


async def _stored(app: FastAPI, rid: str) -> Stored | None:
    """The gateway's stored answer of record `rid`, as the answer log holds it."""
    log = idempotency_store(app.state.gateway_state).log
    assert log is not None
    assert log.owner
    found = log.find(rid)
    return None if found is None else log.read(found)


async def _no_row(app: FastAPI, rid: str) -> bool:
    """Nothing of the portable path: the gateway's claims never write `idempotency_records`."""
    async with app.state.engine.connect() as conn:
        query = select(IdempotencyRecord.id).where(IdempotencyRecord.id == rid)
        return (await conn.execute(query)).first() is None


async def test_a_keyed_read_only_call_stores_its_answer_with_its_charge(
    app: FastAPI, client: AsyncClient
) -> None:
    app_id, consumer, key_id, secret = await _setup(client)
    before = (await balances(client, consumer))["balance"]
    rid = record_id("key", f"{consumer.workspace_id}|key:{key_id}", "read-once")
    calls = [call(client, secret, app_id, "total", headers={KEY: "read-once"}) for _ in range(50)]
    responses = await asyncio.gather(*calls)
    assert {r.status_code for r in responses} <= {200, 409}
    ran = [r for r in responses if r.status_code == 200 and "Idempotent-Replayed" not in r.headers]
    assert len(ran) == 1
    again = await call(client, secret, app_id, "total", headers={KEY: "read-once"})
    assert again.headers["Idempotent-Replayed"] == "1"
    assert again.content == ran[0].content
    stored = await _stored(app, rid)
    assert stored is not None
    assert stored.status == 200
    assert stored.body == ran[0].content
    assert await _no_row(app, rid)
    local = idempotency_store(app.state.gateway_state).local
    assert local is not None
    assert local.inflight == {}  # nothing left claimed
    assert (await balances(client, consumer))["balance"] == before - 100  # charged once
    await ledger_invariants(app)


async def test_a_key_held_by_another_process_refuses_the_call_and_changes_nothing(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process claimed the key after this one read it (simulated: the read sees
    nothing, the other's claim row is in the database): the answer can't be stored, so the
    call is refused — whether its charge rides the writer (read-only) or its own transaction
    (it wrote) — and neither its charge nor its writes are kept."""
    app_id, consumer, key_id, secret = await _setup(client)
    assert (await hit(client, secret, app_id, 1)).status_code == 200
    before = (await balances(client, consumer))["balance"]
    store = idempotency_store(app.state.gateway_state)
    bodies = {
        api: f'{{"appId":"{app_id}","api":"{api}","version":"latest","args":{args}}}'.encode()
        for api, args in (("total", "{}"), ("hit", '{"n":1}'))
    }
    keyed = fingerprint_key(app.state.settings.signing_key)
    async with app.state.engine.connect() as conn:
        for api, body in bodies.items():
            rid = record_id("key", f"{consumer.workspace_id}|key:{key_id}", f"held-{api}")
            print_ = fingerprint(keyed, "POST", "/api/v1/invocations", "", body)
            await store.claim(conn, rid, print_)
    monkeypatch.setattr(local_claims, "read_record", lambda _rid, _db: None)
    for api, body in bodies.items():
        response = await client.post(
            "/api/v1/invocations",
            content=body,
            headers={"X-Api-Key": secret, KEY: f"held-{api}", "Content-Type": "application/json"},
        )
        assert_error(response, 409, "idempotency_key_in_use")
    monkeypatch.undo()
    assert (await balances(client, consumer))["balance"] == before  # nothing charged
    assert await total(client, secret, app_id) == 1  # the refused `hit` wrote nothing
    assert store.local is not None
    assert store.local.inflight == {}
    await ledger_invariants(app)


async def test_a_failed_keyed_call_frees_its_key_without_a_write(
    app: FastAPI, client: AsyncClient
) -> None:
    app_id, consumer, key_id, secret = await _setup(client)
    rid = record_id("key", f"{consumer.workspace_id}|key:{key_id}", "fails")
    failed = await call(client, secret, app_id, "failing", {"n": 1}, headers={KEY: "fails"})
    assert_error(failed, 409, "nope")
    assert await _stored(app, rid) is None  # nothing was stored
    assert await _no_row(app, rid)
    good = await call(client, secret, app_id, "hit", {"n": 1}, headers={KEY: "fails"})
    assert good.status_code == 200
    stored = await _stored(app, rid)
    assert stored is not None
    assert stored.status == 200
    data_of(good)


async def test_an_answer_past_its_retention_is_not_replayed_and_its_key_runs_again(
    app: FastAPI, client: AsyncClient
) -> None:
    app_id, consumer, key_id, secret = await _setup(client)
    log = idempotency_store(app.state.gateway_state).log
    assert log is not None
    rid = record_id("key", f"{consumer.workspace_id}|key:{key_id}", "short-lived")
    kept = await hit(client, secret, app_id, 1, **{KEY: "short-lived"})
    assert kept.status_code == 200
    assert (await hit(client, secret, app_id, 1, **{KEY: "short-lived"})).headers[
        "Idempotent-Replayed"
    ] == "1"
    assert await total(client, secret, app_id) == 1
    log.retention_us = 0  # answers from now on are kept for no time: as if their 24 h were over
    expiring = await hit(client, secret, app_id, 2, **{KEY: "expiring"})
    assert expiring.status_code == 200
    again = await hit(client, secret, app_id, 3, **{KEY: "expiring"})  # another payload: no 422
    assert again.status_code == 200
    assert "Idempotent-Replayed" not in again.headers
    assert await total(client, secret, app_id) == 3  # the expired key ran a second time
    found = log.find(rid)  # the answer kept for 24 h is still found and replayed
    assert found is not None
    assert found.live()
    replay = await hit(client, secret, app_id, 1, **{KEY: "short-lived"})
    assert replay.headers["Idempotent-Replayed"] == "1"
    assert replay.content == kept.content


async def test_fresh_keys_read_nothing_once_known_and_old_answers_still_replay(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The filter of stored ids (`KnownKeys`): once loaded, a fresh key is claimed without
    reading the database; an answer stored before the filter existed (as after a restart) is
    found by the load and replayed."""
    app_id, _consumer, _key_id, secret = await _setup(client)
    first = await call(client, secret, app_id, "hit", {"n": 1}, headers={KEY: "old"})
    assert first.status_code == 200
    store = idempotency_store(app.state.gateway_state)
    assert store.local is not None
    store.local.known = KnownKeys()  # a process started after the answer was stored
    reads: list[str] = []
    original_find = AnswerLog.find

    def counted(log: AnswerLog, rid: str, db: Any = None) -> Any:
        reads.append(rid)
        return original_find(log, rid, db)

    monkeypatch.setattr(AnswerLog, "find", counted)
    replayed = await call(client, secret, app_id, "hit", {"n": 1}, headers={KEY: "old"})
    assert replayed.headers["Idempotent-Replayed"] == "1"  # read: the filter wasn't loaded
    assert replayed.content == first.content
    if store.local.known._task is not None:
        await store.local.known._task
    reads.clear()
    again = await call(client, secret, app_id, "hit", {"n": 1}, headers={KEY: "old"})
    assert again.headers["Idempotent-Replayed"] == "1"  # known: read, and replayed
    assert len(reads) == 1
    reads.clear()
    for n in range(5):
        fresh = await call(client, secret, app_id, "hit", {"n": 1}, headers={KEY: f"fresh-{n}"})
        assert fresh.status_code == 200
        assert "Idempotent-Replayed" not in fresh.headers
    assert reads == []  # fresh keys: nothing read
    repeat = await call(client, secret, app_id, "hit", {"n": 1}, headers={KEY: "fresh-3"})
    assert repeat.headers["Idempotent-Replayed"] == "1"
    assert await total(client, secret, app_id) == 6  # "old" once, five fresh keys once each


async def test_answers_are_replayed_after_the_owner_crashes_and_a_lost_one_refuses_its_key(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    """A server process that owned the answer log is killed (SIGKILL: nothing sealed); the power
    loss is played by cutting its log's last record short. The next owner (this process) reads
    the open segment again: the intact answer is replayed, and the key of the cut one — its call
    committed, its charge and insert are there — is refused, never run a second time."""
    async with running_servers(settings, count=1) as urls:
        async with AsyncClient(base_url=urls[0], timeout=30) as server:
            app_id, consumer, _key_id, secret = await _setup(server)
            kept = await hit(server, secret, app_id, 1, **{KEY: "kept"})
            cut = await hit(server, secret, app_id, 1, **{KEY: "cut"})
            assert kept.status_code == cut.status_code == 200
            before = (await balances(server, consumer))["balance"]
        urls.kill(0)
    directory = f"{sqlite_file(settings.resolved_database_url)}-answers"
    names = os.listdir(directory)
    [segment] = [name for name in names if name.endswith(".log")]
    assert segment.replace(".log", ".idx") not in names  # the crash left it open
    path = os.path.join(directory, segment)
    os.truncate(path, os.stat(path).st_size - 100)
    replayed = await hit(client, secret, app_id, 1, **{KEY: "kept"})
    assert replayed.headers["Idempotent-Replayed"] == "1"
    assert replayed.content == kept.content
    lost = await hit(client, secret, app_id, 1, **{KEY: "cut"})
    assert_error(lost, 409, "idempotency_answer_lost")
    assert await total(client, secret, app_id) == 2  # each key ran once
    assert (await balances(client, consumer))["balance"] == before - 100  # only `total` paid
    await ledger_invariants(app)


async def test_a_second_process_stores_no_answer_for_a_call_whose_charge_failed(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that doesn't own the answer log claims keys with rows; the answer of a call
    that touched no table must commit with its charge, not before it: when the charge can't be
    written (the database holds less than this process believed: another process spent it),
    the call is a 402 and its key is free, never a stored 200 replayed for free."""
    owner, consumer = await register(client), await register(client)
    app_id = await new_app(client, owner.headers, "Pings", visibility="public")
    ping = [{"id": "pong", "type": "set", "value": 1}]
    await new_api(client, owner.headers, app_id, "ping", price=100, steps=ping)
    published = f"/api/v1/apps/{app_id}/versions"
    data_of(await client.post(published, json={"bump": "minor"}, headers=owner.headers))
    _, secret = await app_key(client, consumer, app_id)
    assert (await call(client, secret, app_id, "ping", headers={KEY: "opens-the-log"})).is_success
    store = idempotency_store(app.state.gateway_state)
    assert store.local is not None
    monkeypatch.setattr(store.local.log, "owner", False)  # as a second process sees the log
    assert (await call(client, secret, app_id, "ping", headers={KEY: "warm"})).is_success
    async with app.state.engine.begin() as conn:  # what another process reserved meanwhile
        await conn.exec_driver_sql(
            "UPDATE wallets SET held = balance WHERE workspace_id = ? AND kind = 'balance'",
            (consumer.workspace_id,),
        )
    refused = await call(client, secret, app_id, "ping", headers={KEY: "unpaid"})
    assert_error(refused, 402, "insufficient_balance")
    again = await call(client, secret, app_id, "ping", headers={KEY: "unpaid"})
    assert_error(again, 402, "insufficient_balance")
    assert "Idempotent-Replayed" not in again.headers
