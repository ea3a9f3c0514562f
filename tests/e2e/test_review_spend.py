"""Per-call spend, review: a request-log row says what the call cost its caller (`amount`, the
debit of its ledger entries), and both lists find one call by `requestId` within the current
workspace — reconciling a call no longer takes paging through either list."""

import asyncio
from itertools import count
from typing import Any

import pytest
from alembic import command
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import text

from apiforge.core.db import make_engine
from apiforge.core.settings import Settings
from apiforge.gateway.stages.log import request_log_buffer
from apiforge.migrate import alembic_config
from tests.e2e._billing import COST, PRICE, Market, market, top_up
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

_ids = count()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


def _request_id(label: str) -> str:
    """A client-chosen `X-Request-ID`, unique within the test run."""
    return f"spend-{label}-{next(_ids):04d}"


async def _invoke(
    client: AsyncClient, m: Market, api: str, request_id: str, **headers: str
) -> Response:
    args = {"fail": api == "failing"}
    name = "priced" if api == "failing" else api
    return await call(
        client, m.secret, m.app_id, name, args, headers={"X-Request-ID": request_id, **headers}
    )


async def _flush(app: FastAPI) -> None:
    """The buffered rows (calls that moved nothing) written now; charged rows already are."""
    await request_log_buffer(app.state.gateway_state).flush()


async def _logs(client: AsyncClient, user: User, request_id: str, **query: str) -> Any:
    params = {"requestId": request_id, **query}
    return data_of(await client.get("/api/v1/request-logs", params=params, headers=user.headers))[
        "list"
    ]


async def _entries(client: AsyncClient, user: User, request_id: str) -> Any:
    params = {"requestId": request_id}
    return data_of(await client.get("/api/v1/ledger-entries", params=params, headers=user.headers))[
        "list"
    ]


async def test_a_charged_calls_log_row_shows_exactly_its_ledger_debit(
    app: FastAPI, client: AsyncClient
) -> None:
    """Each way a call is charged (SQLite: through the process's writer for a read, in the
    call's own transaction for a write; PostgreSQL: the call's transaction), and a workflow run
    charged its steps' cost: the log row's `amount` is the caller's ledger debit, negated."""
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, 10 * PRICE)
    costs = {"priced": COST, "listed": COST, "insert": 2}
    for api, cost in costs.items():
        request_id = _request_id(api)
        assert (await _invoke(client, m, api, request_id)).status_code == 200
        await _flush(app)
        (row,) = await _logs(client, m.consumer, request_id)
        (debit,) = await _entries(client, m.consumer, request_id)
        assert (row["status"], row["amount"]) == (200, PRICE)
        assert (debit["kind"], debit["walletKind"], debit["amount"]) == ("call", "balance", -PRICE)
        # The builder sees the same call at the price its caller paid, and only its earnings.
        (seen,) = await _logs(client, m.builder, request_id, scope="builder")
        assert (seen["callerWorkspaceId"], seen["amount"]) == (m.consumer.workspace_id, PRICE)
        (earned,) = await _entries(client, m.builder, request_id)
        assert (earned["walletKind"], earned["amount"]) == ("earnings", PRICE - cost)

    # A workflow run (the builder's own app: it pays the steps' cost, to the platform).
    await top_up(client, m.admin, m.builder.workspace_id, 5)
    request_id = _request_id("workflow")
    body = {"appId": m.app_id, "steps": [{"id": "n", "type": "count", "collection": "items"}]}
    headers = {**m.builder.headers, "X-Request-ID": request_id}
    data_of(await client.post("/api/v1/workflows", json=body, headers=headers))
    await _flush(app)
    (row,) = await _logs(client, m.builder, request_id)
    (debit,) = await _entries(client, m.builder, request_id)
    assert (row["api"], row["amount"], debit["amount"]) == ("(workflow)", COST, -COST)


async def test_calls_that_moved_nothing_log_zero_and_have_no_entries(
    app: FastAPI, client: AsyncClient
) -> None:
    """Refused for want of RU (402), failed after its steps ran (400), free (price 0), unknown
    API (404), replayed (an idempotency key's stored answer): 0, and no ledger entry."""
    m = await market(app, client)
    short = _request_id("short")
    assert (await _invoke(client, m, "priced", short)).status_code == 402
    await top_up(client, m.admin, m.consumer.workspace_id, PRICE)
    failing, free, unknown = _request_id("fail"), _request_id("free"), _request_id("unknown")
    assert (await _invoke(client, m, "failing", failing)).status_code == 400
    assert (await _invoke(client, m, "free", free)).status_code == 200
    assert (await _invoke(client, m, "nosuch", unknown)).status_code == 404
    first, again = _request_id("first"), _request_id("replay")
    key = {"Idempotency-Key": f"spend-key-{next(_ids)}"}
    assert (await _invoke(client, m, "priced", first, **key)).status_code == 200
    replayed = await _invoke(client, m, "priced", again, **key)
    assert replayed.headers.get("Idempotent-Replayed") == "1", replayed.text

    await _flush(app)
    expected = {short: 402, failing: 400, free: 200, unknown: 404, again: 200}
    for request_id, status in expected.items():
        (row,) = await _logs(client, m.consumer, request_id)
        assert (row["status"], row["amount"]) == (status, 0), request_id
        assert await _entries(client, m.consumer, request_id) == []
    # The call the replay answered for was charged once, and says so.
    (row,) = await _logs(client, m.consumer, first)
    assert row["amount"] == PRICE
    assert [e["amount"] for e in await _entries(client, m.consumer, first)] == [-PRICE]


async def test_another_workspaces_request_id_finds_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    """Request ids are the client's to choose, so two workspaces may send the same one: each
    finds only its own rows, and a guessed id of another workspace's call finds nothing."""
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, PRICE)
    shared = _request_id("shared")
    assert (await _invoke(client, m, "priced", shared)).status_code == 200

    await _flush(app)
    stranger = await register(client)
    assert await _logs(client, stranger, shared) == []
    assert await _logs(client, stranger, shared, scope="builder") == []
    assert await _entries(client, stranger, shared) == []

    _, secret = await app_key(client, stranger, m.app_id)
    reused = await call(client, secret, m.app_id, "free", headers={"X-Request-ID": shared})
    data_of(reused)
    await _flush(app)
    (own,) = await _logs(client, stranger, shared)
    assert (own["api"], own["amount"]) == ("free", 0)
    (mine,) = await _logs(client, m.consumer, shared)
    assert (mine["api"], mine["amount"]) == ("priced", PRICE)
    # The builder sees both calls to its app; its one earnings entry is the charged one's.
    seen = await _logs(client, m.builder, shared, scope="builder")
    assert sorted((s["callerWorkspaceId"], s["amount"]) for s in seen) == sorted(
        [(m.consumer.workspace_id, PRICE), (stranger.workspace_id, 0)]
    )
    assert [e["amount"] for e in await _entries(client, m.builder, shared)] == [PRICE - COST]


@pytest.mark.parametrize(
    "value",
    ["short", "x" * 129, "has space-1", "nul\x00-in-it", "ünïcödé-id", "semi;colon1"],
)
async def test_a_malformed_request_id_filter_is_a_400_naming_it(
    client: AsyncClient, value: str
) -> None:
    user = await register(client)
    for path in ("/api/v1/request-logs", "/api/v1/ledger-entries"):
        response = await client.get(path, params={"requestId": value}, headers=user.headers)
        data = assert_error(response, 400, "invalid_input")
        assert [e["field"] for e in data["errors"]] == ["requestId"], data


def _insert_old_row(url: str) -> None:
    async def run() -> None:
        engine = make_engine(url, pool=False)
        try:
            async with engine.begin() as connection:
                await connection.execute(
                    text(
                        "INSERT INTO request_logs (id, created_at, request_id, app_id, api, "
                        "version, status, reason, latency_ms, client_ip) VALUES ('01old', "
                        "'2026-01-01 00:00:00', 'old-call-0001', 'app', 'api', 'dev', 200, '', "
                        "1.0, '127.0.0.1')"
                    )
                )
        finally:
            await engine.dispose()

    asyncio.run(run())


def _amounts(url: str) -> list[Any]:
    async def run() -> list[Any]:
        engine = make_engine(url, pool=False)
        try:
            async with engine.connect() as connection:
                rows = await connection.execute(text("SELECT amount FROM request_logs"))
                return [row[0] for row in rows]
        finally:
            await engine.dispose()

    return asyncio.run(run())


def test_rows_logged_before_the_upgrade_keep_no_amount(settings: Settings) -> None:
    """0020 adds the column without a default: an older row says "not recorded" (null), never
    a made-up 0, and the downgrade gives the table back as it was."""
    url = settings.resolved_database_url
    config = alembic_config(url)
    command.downgrade(config, "0019")
    _insert_old_row(url)
    command.upgrade(config, "head")
    assert _amounts(url) == [None]
    command.downgrade(config, "0019")
    command.upgrade(config, "head")
    assert _amounts(url) == [None]
