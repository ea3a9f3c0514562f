"""Review of a priced call racing the deletion of a workspace it moves RU of: the app's
(builder's) workspace, or the caller's. The charge moves a wallet only while it still belongs to
the workspace the call read, so a call whose builder's workspace is deleted while it runs is a
404 `app_not_found`, and one whose own workspace is, a 404 `workspace_not_found`: nothing
debited or credited (no RU paid into an earnings wallet the deletion detached from every
workspace, nor out of a detached balance), the call's writes rolled back, one 404 row in the
request log, not counted against `callsPerMonth`. `listed` charges through SQLite's writer,
`insert` in the call's own transaction (both are the call's transaction on PostgreSQL)."""

from collections.abc import Callable

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select

from apiforge.billing.models import LedgerEntry
from apiforge.datasets.models import Record
from apiforge.gateway.stages.log import request_log_buffer
from apiforge.usage.models import RequestLog
from apiforge.workspaces.models import Workspace
from tests.e2e._billing import Market, ledger_invariants, market, top_up
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, deleted_before_steps, while_deleting

SQLITE_WRITER = "listed"
IN_CALL = "insert"


KEYED = "listed+key"  # reads only, with an idempotency key: its answer commits with the charge
CALLS = [SQLITE_WRITER, IN_CALL, "priced", KEYED]


async def _call(client: AsyncClient, m: Market, call: str, n: int) -> Response:
    api, _, keyed = call.partition("+")
    headers = {"X-Api-Key": m.secret}
    if keyed:
        headers["Idempotency-Key"] = f"deleted-{n}"
    return await client.post(
        "/api/v1/invocations",
        json={"appId": m.app_id, "api": api, "version": "latest", "args": {}},
        headers=headers,
    )


async def _after(app: FastAPI, m: Market, api: str) -> tuple[list[int], int, int]:
    """The statuses of the consumer's request-log rows for `api`, the call entries for it, and
    the records of the app's collection."""
    await request_log_buffer(app.state.gateway_state).flush()
    async with app.state.engine.connect() as conn:
        statuses = await conn.scalars(
            select(RequestLog.status).where(
                RequestLog.workspace_id == m.consumer.workspace_id, RequestLog.api == api
            )
        )
        entries = await conn.scalar(
            select(func.count()).select_from(LedgerEntry).where(LedgerEntry.api == api)
        )
        records = await conn.scalar(select(func.count()).select_from(Record))
    return sorted(statuses.all()), int(entries or 0), int(records or 0)


async def _race(
    app: FastAPI,
    client: AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    call: str,
    deleted: Callable[[Market], str],
) -> Response:
    """A priced call of `call` during which the workspace `deleted` names is deleted: its
    answer, once checked that nothing moved, one 404 row was logged (the plan's
    `callsPerMonth` of 2 not reached: it is not counted), and nothing else was written."""
    m = await market(app, client)
    await on_plan(client, m.admin, m.consumer.workspace_id, "few", callsPerMonth=2)
    await top_up(client, m.admin, m.consumer.workspace_id, 100)
    api = call.partition("+")[0]
    assert (await _call(client, m, call, 0)).status_code == 200  # wallets, key, plan cached
    rows, entries, records = await _after(app, m, api)
    before = await ledger_invariants(app)
    response = await deleted_before_steps(
        app, monkeypatch, deleted(m), lambda: _call(client, m, call, 1)
    )
    # Nothing moved: the caller kept its RU, no detached wallet got any.
    assert await ledger_invariants(app) == before, response.text
    assert await _after(app, m, api) == (sorted([*rows, 404]), entries, records)
    return response


@pytest.mark.parametrize("call", [SQLITE_WRITER, "priced", KEYED])
async def test_a_call_whose_apps_workspace_is_deleted_as_it_runs_moves_nothing(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    """(A writing call finds its collection gone with the app: 404 `dataset_not_found`.)"""
    response = await _race(app, client, monkeypatch, call, lambda m: m.builder.workspace_id)
    assert_error(response, 404, "app_not_found")


@pytest.mark.parametrize("call", CALLS)
async def test_a_call_whose_callers_workspace_is_deleted_as_it_runs_moves_nothing(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    response = await _race(app, client, monkeypatch, call, lambda m: m.consumer.workspace_id)
    assert_error(response, 404, "workspace_not_found")


@pytest.mark.parametrize(
    ("whose", "reason"), [("builder", "app_not_found"), ("consumer", "workspace_not_found")]
)
async def test_a_call_waiting_on_a_deletion_moves_nothing_once_it_commits(
    app: FastAPI, client: AsyncClient, whose: str, reason: str
) -> None:
    """The deletion is under way when the call starts: the call reads the workspace as still
    there, its charge waits for the deletion's locks (PostgreSQL: the wallet rows it detaches;
    SQLite: the write lock), then finds the wallet detached."""
    m = await market(app, client)
    await on_plan(client, m.admin, m.consumer.workspace_id, "few", callsPerMonth=2)
    await top_up(client, m.admin, m.consumer.workspace_id, 100)
    assert (await _call(client, m, SQLITE_WRITER, 0)).status_code == 200
    rows, entries, _ = await _after(app, m, SQLITE_WRITER)
    before = await ledger_invariants(app)
    workspace_id = getattr(m, whose).workspace_id
    call = lambda: _call(client, m, SQLITE_WRITER, 1)  # noqa: E731
    response = await while_deleting(app, Workspace, workspace_id, call)
    assert_error(response, 404, reason)
    assert await ledger_invariants(app) == before
    assert (await _after(app, m, SQLITE_WRITER))[:2] == (sorted([*rows, 404]), entries)
