"""Review of cancelled priced calls: a call whose client goes away (its task cancelled) while or
right after its charge commits was charged, and is one 200 row of the request log and one call of
its quota, not also a 499 row; a call cancelled before its charge commits is charged nothing and
is one 499 row. `listed` charges through SQLite's writer, `insert` in the call's own transaction
(both are the call's transaction on PostgreSQL). A keyed call cancelled as its claim commits
leaves the key free for its retry."""

import asyncio

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select

from apiforge.billing.models import LedgerEntry
from apiforge.core.lazydb import LazyConnection
from apiforge.gateway.context import CANCELLED, GatewayContext
from apiforge.gateway.stages.idempotency import IdempotencyStage
from apiforge.gateway.stages.log import request_log_buffer
from apiforge.gateway.stages.run import RunStage
from apiforge.usage.models import RequestLog
from tests.e2e._billing import Market, invoke, ledger_invariants, market
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error

SQLITE_WRITER = "listed"  # reads only: its charge commits on SQLite's writer
IN_CALL = "insert"  # writes: its charge commits with the call's own transaction


async def _cancel_me() -> None:
    """The client goes away here: the call's task is cancelled at its next wait."""
    task = asyncio.current_task()
    assert task is not None
    task.cancel()
    await asyncio.sleep(0)


async def _cancelled_call(client: AsyncClient, m: Market, api: str) -> None:
    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(invoke(client, m, api))


async def _rows_and_debits(app: FastAPI, m: Market, api: str) -> tuple[list[int], int]:
    """The statuses of the consumer's request-log rows for `api` and its charges for it."""
    await request_log_buffer(app.state.gateway_state).flush()
    async with app.state.engine.connect() as conn:
        statuses = (
            await conn.scalars(
                select(RequestLog.status).where(
                    RequestLog.workspace_id == m.consumer.workspace_id, RequestLog.api == api
                )
            )
        ).all()
        debits = (
            await conn.scalars(
                select(LedgerEntry.id).where(
                    LedgerEntry.workspace_id == m.consumer.workspace_id,
                    LedgerEntry.kind == "call",
                    LedgerEntry.api == api,
                    LedgerEntry.amount < 0,
                )
            )
        ).all()
    return sorted(statuses), len(debits)


async def _setup(app: FastAPI, client: AsyncClient, calls: int) -> Market:
    m = await market(app, client)
    await on_plan(client, m.admin, m.consumer.workspace_id, "few", callsPerMonth=calls)
    return m


@pytest.mark.parametrize("api", [SQLITE_WRITER, IN_CALL])
async def test_a_call_cancelled_right_after_its_charge_committed_is_one_200_row(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    """The cancellation reached the call after its commit (as it gave its connection back): the
    charge and its 200 row stood, and the after-stages wrote a 499 row too, and did not count
    the call against `callsPerMonth`, so the plan let one charged call more through."""
    m = await _setup(app, client, calls=2)
    assert await invoke(client, m, api) == 200  # the quota meter is loaded
    run = RunStage.on_request
    armed = [True]

    async def committed_then_cancelled(self: RunStage, ctx: GatewayContext) -> None:
        await run(self, ctx)
        if armed:
            armed.clear()
            await _cancel_me()

    monkeypatch.setattr(RunStage, "on_request", committed_then_cancelled)
    await _cancelled_call(client, m, api)
    assert await _rows_and_debits(app, m, api) == ([200, 200], 2)
    # Two charged calls of two: the third is over the quota.
    response = await client.post(
        "/api/v1/invocations",
        json={"appId": m.app_id, "api": api, "version": "latest", "args": {}},
        headers={"X-Api-Key": m.secret},
    )
    assert_error(response, 403, "quota_exceeded")
    await ledger_invariants(app)


@pytest.mark.parametrize("sent", [True, False], ids=["commit_sent", "commit_not_sent"])
@pytest.mark.parametrize("api", [SQLITE_WRITER, IN_CALL])
async def test_a_call_cancelled_at_its_commit_is_one_row_saying_what_committed(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, api: str, sent: bool
) -> None:
    """The client went away as the call's commit was sent (or just before): one row says what
    committed, a 200 with the charge or a 499 without it. On SQLite the charge's transaction
    commits on the driver's (or the writer's) thread once queued, waited for or not; on
    PostgreSQL a commit never sent rolls the call back."""
    m = await _setup(app, client, calls=10)
    assert await invoke(client, m, api) == 200
    run, commit = RunStage.on_request, LazyConnection.commit
    armed: list[object] = []  # the connection of the call to cancel, once in its run stage

    async def arming_run(self: RunStage, ctx: GatewayContext) -> None:
        if not armed:
            armed.append(ctx.connection)
        await run(self, ctx)

    async def cancelled_commit(self: LazyConnection) -> None:
        if armed and armed[0] is self and self.started:
            armed[0] = None
            asyncio.current_task().cancel()  # type: ignore[union-attr]
            if not sent:
                await asyncio.sleep(0)
        await commit(self)

    monkeypatch.setattr(RunStage, "on_request", arming_run)
    monkeypatch.setattr(LazyConnection, "commit", cancelled_commit)
    sqlite = app.state.engine.dialect.name == "sqlite"
    if sqlite and api == SQLITE_WRITER:  # its charge is queued on the writer, waited for there
        writer = app.state.gateway_state.extra["charger"].writer
        queue = writer.queue

        async def cancelled_queue(charge: object) -> object:
            asyncio.current_task().cancel()  # type: ignore[union-attr]
            if not sent:
                await asyncio.sleep(0)
            return await queue(charge)

        monkeypatch.setattr(writer, "queue", cancelled_queue)
    await _cancelled_call(client, m, api)
    statuses, debits = await _rows_and_debits(app, m, api)
    if sqlite and (sent or api == IN_CALL):
        assert (statuses, debits) == ([200, 200], 2)
    elif sent:  # PostgreSQL: whether a COMMIT sent was done first is the server's to say
        assert (statuses, debits) in (([200, 200], 2), ([200, CANCELLED], 1))
    else:
        assert (statuses, debits) == ([200, CANCELLED], 1)
    await ledger_invariants(app)


@pytest.mark.parametrize("api", [SQLITE_WRITER, IN_CALL])
async def test_a_call_cancelled_before_its_charge_is_one_499_row_and_not_charged(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch, api: str
) -> None:
    m = await _setup(app, client, calls=2)
    assert await invoke(client, m, api) == 200
    run = RunStage.on_request
    armed = [True]

    async def cancelled_then_run(self: RunStage, ctx: GatewayContext) -> None:
        if armed:
            armed.clear()
            await _cancel_me()
        await run(self, ctx)

    monkeypatch.setattr(RunStage, "on_request", cancelled_then_run)
    await _cancelled_call(client, m, api)
    assert await _rows_and_debits(app, m, api) == ([200, CANCELLED], 1)
    assert await invoke(client, m, api) == 200  # the cancelled call took none of the quota
    await ledger_invariants(app)


async def test_a_call_cancelled_as_its_idempotency_claim_commits_leaves_the_key_free(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim row committed while the call was being cancelled, before the stage had it:
    nothing released it, and a retry with the key was 409 `key_in_use` until the lease ran out
    (120 s). On SQLite this process claims keys in memory, with no wait in between."""
    if app.state.engine.dialect.name == "sqlite":
        pytest.skip("the embedded database's gateway keys are claimed in memory")
    m = await _setup(app, client, calls=10)
    stage, commit = IdempotencyStage.on_request, LazyConnection.commit
    armed: list[object] = []  # the first keyed call's connection, while it claims
    calls = [0]

    async def arming(self: IdempotencyStage, ctx: GatewayContext) -> None:
        calls[0] += 1
        if calls[0] == 1:
            armed.append(ctx.connection)
        try:
            await stage(self, ctx)
        finally:
            armed.clear()

    async def cancelled_commit(self: LazyConnection) -> None:
        if armed and armed[0] is self:
            armed.clear()
            asyncio.current_task().cancel()  # type: ignore[union-attr]
        await commit(self)

    monkeypatch.setattr(IdempotencyStage, "on_request", arming)
    monkeypatch.setattr(LazyConnection, "commit", cancelled_commit)
    body = {"appId": m.app_id, "api": IN_CALL, "version": "latest", "args": {}}
    headers = {"X-Api-Key": m.secret, "Idempotency-Key": "cancelled-claim"}

    async def keyed() -> Response:
        return await client.post("/api/v1/invocations", json=body, headers=headers)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.create_task(keyed())
    retry = await keyed()
    assert retry.status_code == 200, retry.text
    assert "Idempotent-Replayed" not in retry.headers
    assert await _rows_and_debits(app, m, IN_CALL) == ([200, CANCELLED], 1)
    await ledger_invariants(app)
