"""Review of the embedded database's answer log (idempotency/answer_log.py): answers replayed
after a clean restart and after a crash mid-load, a lost answer's key refused even when its
tombstone could not be written at the first start, and a filter of known ids that never calls
a stored key fresh (embedded SQLite only: PostgreSQL keeps answers as rows). And, on every
backend, a keyed management request whose client left before its body was whole."""

import asyncio
import errno
import os
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from starlette.types import Message

from apiforge.core.db import sqlite_file
from apiforge.core.settings import Settings
from apiforge.gateway.stages.idempotency import idempotency_store
from apiforge.idempotency.claims import Claim, StoredResponse
from apiforge.idempotency.keys import fingerprint, fingerprint_key, record_id
from tests._servers import running_servers
from tests.e2e._apps import apis_of, new_api, new_app
from tests.e2e._asgi import raw_post
from tests.e2e._billing import balances, ledger_invariants
from tests.e2e._idempotency import hit, hits_app, total
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


@pytest.fixture
def embedded(settings: Settings) -> None:
    if sqlite_file(settings.resolved_database_url) is None:
        pytest.skip("the answer log is the embedded database's (PostgreSQL stores rows)")


EMBEDDED = pytest.mark.usefixtures("embedded")


async def _setup(client: AsyncClient) -> tuple[str, User, str]:
    owner, consumer = await register(client), await register(client)
    app_id = await hits_app(client, owner)
    _, secret = await app_key(client, consumer, app_id)
    return app_id, consumer, secret


async def _bounded(calls: Iterable[Callable[[], Awaitable[Response]]], width: int = 6) -> list[Any]:
    """Run `calls` with at most `width` in flight (the plan's concurrency limit is higher)."""
    gate = asyncio.Semaphore(width)

    async def one(make: Callable[[], Awaitable[Response]]) -> Response:
        async with gate:
            return await make()

    return await asyncio.gather(*(one(make) for make in calls), return_exceptions=True)


def _both_kinds(
    server: AsyncClient, secret: str, app_id: str, keys: list[str]
) -> list[Callable[[], Awaitable[Response]]]:
    """A keyed call that writes (`hit`) and one that only reads (`total`) per key."""
    calls: list[Callable[[], Awaitable[Response]]] = []
    for key in keys:
        calls.append(partial(hit, server, secret, app_id, 1, **{KEY: key}))
        calls.append(partial(call, server, secret, app_id, "total", headers={KEY: "t" + key}))
    return calls


def _answers_dir(settings: Settings) -> str:
    return f"{sqlite_file(settings.resolved_database_url)}-answers"


@EMBEDDED
async def test_answers_are_replayed_after_a_clean_restart(settings: Settings) -> None:
    """Written calls (their own transaction) and read-only ones (the charges' writer): every
    answer is replayed by the next server process, and nothing runs twice."""
    keys = [f"k{n}" for n in range(30)]
    async with (
        running_servers(settings, count=1) as urls,
        AsyncClient(base_url=urls[0], timeout=60) as server,
    ):
        app_id, _consumer, secret = await _setup(server)
        first = await _bounded(_both_kinds(server, secret, app_id, keys))
    assert all(r.status_code == 200 for r in first), first
    async with (
        running_servers(settings, count=1) as urls,
        AsyncClient(base_url=urls[0], timeout=60) as server,
    ):
        again = await _bounded(_both_kinds(server, secret, app_id, keys))
        for before, after in zip(first, again, strict=True):
            assert after.headers.get(REPLAYED) == "1", after.text
            assert after.content == before.content
        assert await total(server, secret, app_id) == len(keys)


@EMBEDDED
async def test_a_crash_mid_load_loses_no_answer_and_runs_no_key_twice(settings: Settings) -> None:
    """SIGKILL while keyed calls are being answered: every call that got its 200 is replayed by
    the next process, a call that committed without being answered too, and the others run:
    every key, once."""
    keys = [f"k{n}" for n in range(200)]
    async with (
        running_servers(settings, count=1) as urls,
        AsyncClient(base_url=urls[0], timeout=60) as server,
    ):
        app_id, _consumer, secret = await _setup(server)
        load = asyncio.ensure_future(
            _bounded([partial(hit, server, secret, app_id, 1, **{KEY: k}) for k in keys])
        )
        await asyncio.sleep(0.3)
        urls.kill(0)
        first = await load
    answered = {k: r for k, r in zip(keys, first, strict=True) if isinstance(r, Response)}
    answered = {k: r for k, r in answered.items() if r.status_code == 200}
    async with (
        running_servers(settings, count=1) as urls,
        AsyncClient(base_url=urls[0], timeout=60) as server,
    ):
        ran_before = await total(server, secret, app_id)
        assert ran_before >= len(answered)
        again = await _bounded([partial(hit, server, secret, app_id, 1, **{KEY: k}) for k in keys])
        ran_now = 0
        for key, response in zip(keys, again, strict=True):
            assert isinstance(response, Response)
            assert response.status_code == 200, response.text
            if key in answered:
                assert response.headers.get(REPLAYED) == "1", (key, response.text)
                assert response.content == answered[key].content
            elif REPLAYED not in response.headers:
                ran_now += 1  # its first call committed nothing: it runs now (else: replayed)
        # Every key has run exactly once: before the kill (committed) or now.
        assert ran_before + ran_now == len(keys)
        assert await total(server, secret, app_id) == len(keys)


@EMBEDDED
async def test_a_lost_answer_stays_refused_when_its_tombstone_could_not_be_written(
    app: FastAPI, client: AsyncClient, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner crashed with its last answer torn (power loss): the next start must refuse
    that key (409 `idempotency_answer_lost`, its call ran and was charged). When the disk is
    full at that first start (the tombstone can't be written), the start fails; the key must
    still be refused once the disk has room again, not run and charged a second time."""
    async with running_servers(settings, count=1) as urls:
        async with AsyncClient(base_url=urls[0], timeout=30) as server:
            app_id, consumer, secret = await _setup(server)
            kept = await hit(server, secret, app_id, 1, **{KEY: "kept"})
            cut = await hit(server, secret, app_id, 1, **{KEY: "cut"})
            assert kept.status_code == cut.status_code == 200
            before = (await balances(server, consumer))["balance"]
        urls.kill(0)
    directory = _answers_dir(settings)
    [segment] = [name for name in os.listdir(directory) if name.endswith(".log")]
    path = os.path.join(directory, segment)
    os.truncate(path, os.stat(path).st_size - 100)

    def full(*_: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwritev", full)
    failed = await hit(client, secret, app_id, 1, **{KEY: "cut"})
    assert failed.status_code >= 500  # the log could not be opened: nothing ran
    monkeypatch.undo()
    lost = await hit(client, secret, app_id, 1, **{KEY: "cut"})
    assert_error(lost, 409, "idempotency_answer_lost")
    replayed = await hit(client, secret, app_id, 1, **{KEY: "kept"})
    assert replayed.headers[REPLAYED] == "1"
    assert await total(client, secret, app_id) == 2  # each key ran once
    assert (await balances(client, consumer))["balance"] == before - 100  # only `total` paid
    await ledger_invariants(app)


@EMBEDDED
async def test_a_key_answered_while_the_filter_reloads_is_not_taken_for_fresh(
    app: FastAPI, client: AsyncClient
) -> None:
    """The filter of known ids is loaded again, larger, when it fills up. A call in flight when
    that reload is asked for, whose answer commits before the reload's task has started, was
    in neither what the reload read (not answered yet) nor the claims it kept (no longer in
    flight): its retry was taken for a fresh key and ran a second time, charged again."""
    app_id, consumer, secret = await _setup(client)
    assert (await hit(client, secret, app_id, 1, **{KEY: "opens-the-log"})).status_code == 200
    store = idempotency_store(app.state.gateway_state)
    local, reader = store.local, app.state.gateway_state.reader
    assert local is not None
    assert reader is not None
    if local.known._task is not None:
        await local.known._task
    key_id, secret = await app_key(client, consumer, app_id)  # another key: a scope of its own
    body = f'{{"appId":"{app_id}","api":"hit","version":"latest","args":{{"n":1}}}}'.encode()
    scope = f"{consumer.workspace_id}|key:{key_id}"
    rid = record_id("key", scope, "racing")
    keyed = fingerprint_key(app.state.settings.signing_key)
    print_ = fingerprint(keyed, "POST", "/api/v1/invocations", "", body)
    claim = local.fresh(rid, print_)  # the call is in flight: claimed while the filter is ready
    assert claim is not None
    bits = local.known._bits
    bits.added = bits.capacity
    local.known.add(record_id("key", scope, "fills-the-filter"))  # full: reload, "maybe" meanwhile
    other = record_id("key", scope, "asks-for-the-reload")
    assert isinstance(await local.claim(reader, other, print_), Claim)  # load_soon, no await
    # Before the reload's task runs, the racing call commits its answer and settles.
    stored = b'{"code":200,"message":"success","data":{"stored":true}}'
    answer = local.answer(claim, StoredResponse(200, {"content-type": "application/json"}, stored))
    db = sqlite3.connect(reader.path)
    try:
        assert local.log.write(db, answer)
        local.log.before_commit(db)
        db.commit()
    finally:
        db.close()
    local.settle(claim, True)
    assert local.known._task is not None
    await local.known._task
    retry = await client.post(
        "/api/v1/invocations",
        content=body,
        headers={"X-Api-Key": secret, KEY: "racing", "Content-Type": "application/json"},
    )
    assert retry.headers.get(REPLAYED) == "1", retry.text
    assert retry.content == stored
    local.settle(local.inflight[other], False)


async def test_a_keyed_request_cut_short_by_its_client_runs_nothing_and_keeps_no_answer(
    app: FastAPI, client: AsyncClient
) -> None:
    """The client sends part of a keyed YAML import, then the connection drops (the case keys
    exist for). The cut document still parses (fewer APIs): it was imported, its answer stored
    under the key, and the retry with the whole document got 422 `idempotency_key_mismatch`.
    Like an unkeyed request (Starlette's `ClientDisconnect`), it must run nothing."""
    user = await register(client)
    source = await new_app(client, user.headers, "Source")
    steps = [{"id": "x", "type": "set", "value": 1}]
    for api in ("alpha", "beta", "gamma"):
        await new_api(client, user.headers, source, api, steps=steps)
    exported = await client.get(f"/api/v1/apps/{source}/export?format=yaml", headers=user.headers)
    document = exported.content
    cut = document[: document.index(b"- api: gamma")]  # whole lines: still a YAML document
    headers = {**user.headers, KEY: "import-once", "Content-Type": "application/yaml"}
    lines = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    incoming: list[Message] = [
        {"type": "http.request", "body": cut, "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent = await raw_post(app, "/api/v1/apps/import", lines, incoming)
    assert sent == []  # the client is gone: nothing to answer
    listed = data_of(await client.get("/api/v1/apps?pageSize=100", headers=user.headers))
    assert [a["name"] for a in listed["list"]] == ["Source"]  # nothing imported
    retry = await client.post("/api/v1/apps/import", content=document, headers=headers)
    imported = data_of(retry)["id"]
    assert set(await apis_of(client, user.headers, imported)) == {"alpha", "beta", "gamma"}
    again = await client.post("/api/v1/apps/import", content=document, headers=headers)
    assert again.headers[REPLAYED] == "1"
    assert data_of(again)["id"] == imported
