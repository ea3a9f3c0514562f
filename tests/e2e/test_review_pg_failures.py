"""PostgreSQL connections killed under a running server (`pg_terminate_backend` of this test's
own database only: each test has a database of its own, tests/conftest.py): requests after it
succeed, a request whose connection dies midway answers a 503 envelope, and no money moves
half-way (the ledger stays balanced). A database that stops answering (a TCP proxy of the
test's own, stalled: tests/e2e/_proxy.py) costs a request a bounded time and a 503."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import asyncpg
import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import event, make_url
from sqlalchemy.util import await_only

from apiforge.core.settings import Settings
from tests.conftest import DATABASE_URL, _pg_dsn
from tests.e2e._billing import PRICE, Market, balances, ledger_invariants, market
from tests.e2e._proxy import TcpProxy
from tests.e2e._records import own_database
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import PASSWORD, app_client

pytestmark = pytest.mark.skipif(not DATABASE_URL, reason="PostgreSQL only")


async def _terminate(database: str, pid: int | None = None) -> int:
    """Terminate the backends connected to `database` (one of them: `pid`), never this
    connection's own; how many went."""
    conn = await asyncpg.connect(_pg_dsn(DATABASE_URL))
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1"
            " AND pid <> pg_backend_pid() AND ($2::int IS NULL OR pid = $2::int)",
            database,
            pid,
        )
    finally:
        await conn.close()
    return len(rows)


@contextmanager
def opened_connections(app: FastAPI) -> Iterator[list[Any]]:
    """The asyncpg connections the app's pool opens from now on."""
    pool = app.state.engine.sync_engine.pool
    opened: list[Any] = []

    def connect(dbapi_conn: Any, _record: Any) -> None:
        opened.append(dbapi_conn.driver_connection)

    event.listen(pool, "connect", connect)
    try:
        yield opened
    finally:
        event.remove(pool, "connect", connect)


async def seen_closed(connections: list[Any]) -> None:
    """Wait until the app's process has seen the server close `connections` (the close reaches
    its event loop as any other socket event does)."""
    deadline = time.monotonic() + 10
    while not all(connection.is_closed() for connection in connections):
        assert time.monotonic() < deadline, "the terminated connections still look open"
        await asyncio.sleep(0.01)


@contextmanager
def pings(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count the pool's pre-pings (a round trip each)."""
    dialect = app.state.engine.dialect
    real, sent = dialect.do_ping, []

    def do_ping(dbapi_conn: Any) -> bool:
        sent.append(1)
        return bool(real(dbapi_conn))

    monkeypatch.setattr(dialect, "do_ping", do_ping)
    yield sent


@contextmanager
def killed_before(app: FastAPI, statement: str) -> Iterator[list[str]]:
    """Terminate the backend of the connection about to run the first statement that starts
    with `statement` (it then runs on a dead connection); the statements hit, for the test."""
    engine = app.state.engine.sync_engine
    database = own_database(app)
    hits: list[str] = []

    def before(conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if sql.startswith(statement) and not hits:
            hits.append(sql)
            pid = conn.connection.dbapi_connection.driver_connection.get_server_pid()
            # Inside SQLAlchemy's greenlet: the kill is awaited before the statement is sent.
            assert await_only(_terminate(database, pid)) == 1

    event.listen(engine, "before_cursor_execute", before)
    try:
        yield hits
    finally:
        event.remove(engine, "before_cursor_execute", before)


async def _charge(client: AsyncClient, m: Market) -> Response:
    body = {"appId": m.app_id, "api": "priced", "version": "latest", "args": {}}
    return await client.post("/api/v1/invocations", json=body, headers={"X-Api-Key": m.secret})


async def _credit(client: AsyncClient, m: Market) -> Response:
    path = f"/api/v1/admin/wallets/{m.consumer.workspace_id}/credits"
    return await client.post(path, json={"amount": 5}, headers=m.admin.headers)


async def _withdraw(client: AsyncClient, m: Market) -> Response:
    return await client.post("/api/v1/withdrawals", json={"amount": 3}, headers=m.builder.headers)


async def test_requests_after_every_pooled_connection_was_terminated_succeed_without_pings(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool replaces connections the server closed when it hands them out, at no round
    trip: no request meets a dead one, and no checkout pings the server first."""
    with opened_connections(app) as opened, pings(app, monkeypatch) as sent:
        m = await market(app, client)
        data_of(await _charge(client, m))
        for round_ in range(2):
            assert await _terminate(own_database(app)) >= 1
            await seen_closed(list(opened))
            data_of(await client.get("/api/v1/wallets", headers=m.consumer.headers))
            data_of(await _charge(client, m))
            login = {"email": m.consumer.email, "password": PASSWORD}
            data_of(await client.post("/api/v1/auth/login", json=login))
            body = {"name": f"After {round_}"}
            data_of(await client.post("/api/v1/apps", json=body, headers=m.builder.headers))
    assert sent == []
    await ledger_invariants(app)


@pytest.mark.parametrize("operation", [_charge, _credit, _withdraw])
async def test_a_connection_lost_mid_transaction_answers_503_and_moves_no_money(
    app: FastAPI, client: AsyncClient, operation: Any
) -> None:
    m = await market(app, client)
    data_of(await _charge(client, m))  # the builder has earnings to withdraw
    before = (await balances(client, m.consumer), await balances(client, m.builder))
    with killed_before(app, "INSERT INTO ledger_entries") as hits:
        response = await operation(client, m)
    assert hits, "the operation wrote no ledger entry"
    assert_error(response, 503, "database_unavailable")
    assert response.headers["Retry-After"] == "1"
    assert (await balances(client, m.consumer), await balances(client, m.builder)) == before
    await ledger_invariants(app)  # balanced, and no hold left behind
    data_of(await operation(client, m))  # the pool connected anew
    await ledger_invariants(app)


async def test_a_retried_call_after_a_lost_connection_is_charged_once(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    before = await balances(client, m.consumer)
    body = {"appId": m.app_id, "api": "priced", "version": "latest", "args": {}}
    headers = {"X-Api-Key": m.secret, "Idempotency-Key": "charge-1"}
    with killed_before(app, "INSERT INTO ledger_entries"):
        response = await client.post("/api/v1/invocations", json=body, headers=headers)
    assert_error(response, 503, "database_unavailable")
    for _ in range(2):  # ran once, then replayed
        data_of(await client.post("/api/v1/invocations", json=body, headers=headers))
    assert (await balances(client, m.consumer))["balance"] == before["balance"] - PRICE
    await ledger_invariants(app)


async def test_a_connection_lost_under_a_prepared_read_answers_503(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page read goes to asyncpg directly (`core/lazydb.py` `driver_rows`): its connection
    lost there is a 503 too, and the connection leaves the pool."""
    m = await market(app, client)
    body = {"appId": m.app_id, "api": "listed", "version": "latest", "args": {}}
    headers = {"X-Api-Key": m.secret}
    data_of(await client.post("/api/v1/invocations", json=body, headers=headers))
    before = await balances(client, m.consumer)
    database, real, hits = own_database(app), asyncpg.Connection.fetch, list[str]()

    async def fetch(self: asyncpg.Connection, query: str, *args: Any, **kw: Any) -> Any:
        if "records" in query and not hits:  # the page's query: its backend goes first
            hits.append(query)
            assert await _terminate(database, self.get_server_pid()) == 1
        return await real(self, query, *args, **kw)

    monkeypatch.setattr(asyncpg.Connection, "fetch", fetch)
    response = await client.post("/api/v1/invocations", json=body, headers=headers)
    assert hits
    assert_error(response, 503, "database_unavailable")
    assert await balances(client, m.consumer) == before  # not charged
    for _ in range(2):
        data_of(await client.post("/api/v1/invocations", json=body, headers=headers))
    await ledger_invariants(app)


# Far more than a few timeouts of `STALL_TIMEOUT`: a hang, not a slow answer.
BOUND_SECONDS = 20.0
STALL_TIMEOUT = 1.0


async def test_a_stalled_database_answers_503_within_the_timeout_and_recovers(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = make_url(settings.database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    proxied = url.set(host="127.0.0.1", port=proxy.listening)
    update = {
        "database_url": proxied.render_as_string(hide_password=False),
        "db_timeout_seconds": STALL_TIMEOUT,
    }
    try:
        async with app_client(settings.model_copy(update=update)) as (app, client):
            m = await market(app, client)
            data_of(await _charge(client, m))
            login = {"email": m.consumer.email, "password": PASSWORD}
            requests: tuple[Callable[[], Awaitable[Response]], ...] = (
                partial(client.get, "/api/v1/wallets", headers=m.consumer.headers),
                partial(_charge, client, m),
                partial(client.post, "/api/v1/auth/login", json=login),
            )
            proxy.stall()  # connected, and nothing comes back: neither to statements nor connects
            for request in requests * 2:
                response = await asyncio.wait_for(request(), BOUND_SECONDS)
                assert_error(response, 503, "database_unavailable")
            proxy.resume()
            deadline = time.monotonic() + BOUND_SECONDS
            while (response := await _charge(client, m)).status_code != 200:
                assert_error(response, 503, "database_unavailable")
                assert time.monotonic() < deadline, "no recovery"
                await asyncio.sleep(0.1)
            for request in requests:
                data_of(await request())
            await ledger_invariants(app)
            before = await balances(client, m.consumer)
            # Stalled under a prepared read, which goes to asyncpg directly (`driver_rows`).
            real = asyncpg.Connection.fetch

            async def fetch(self: asyncpg.Connection, query: str, *args: Any, **kw: Any) -> Any:
                if "records" in query:
                    proxy.stall()
                return await real(self, query, *args, **kw)

            monkeypatch.setattr(asyncpg.Connection, "fetch", fetch)
            body = {"appId": m.app_id, "api": "listed", "version": "latest", "args": {}}
            listed = client.post("/api/v1/invocations", json=body, headers={"X-Api-Key": m.secret})
            response = await asyncio.wait_for(listed, BOUND_SECONDS)
            assert_error(response, 503, "database_unavailable")
            monkeypatch.undo()
            proxy.resume()
            # Not charged. (Its hold, which the stalled database kept from being released,
            # expires on its own: billing/charging.py.)
            assert await balances(client, m.consumer) == before
    finally:
        await proxy.stop()
