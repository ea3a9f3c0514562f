"""The quota meter and hit log: refusals fold per minute, memory is bounded, stale entries are
refreshed off the caller's path, and a new month starts the call count afresh."""

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.accounts.models import Account
from apiforge.core.db import unit_of_work
from apiforge.plans.hits import QuotaHitLog
from apiforge.plans.meter import CallCount, QuotaMeter, quota_meter
from apiforge.plans.models import Plan, QuotaHit
from apiforge.plans.quotas import QuotaExceededError
from apiforge.tools.ids import new_id
from apiforge.usage.buffer import RequestLogBuffer
from apiforge.workspaces.models import Workspace
from tests.unit.usage._rows import log_row

T = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


def _note(log: QuotaHitLog, workspace: str, now: datetime, quota: str = "records") -> None:
    log.record(
        workspace_id=workspace,
        plan_id="p" * 26,
        quota=quota,
        operation="records.insert",
        limit=10,
        used=10,
        now=now,
    )


async def _stored_hits(app: FastAPI) -> list[QuotaHit]:
    async with unit_of_work(app.state.sessionmaker) as session:
        return list((await session.scalars(select(QuotaHit).order_by(QuotaHit.created_at))).all())


async def test_refusals_fold_into_one_row_per_workspace_quota_and_minute(app: FastAPI) -> None:
    log = QuotaHitLog(lambda: app.state.engine, interval=3600)
    for seconds in (0, 10, 30):
        _note(log, "a" * 26, T + timedelta(seconds=seconds))
    _note(log, "a" * 26, T + timedelta(minutes=1))  # the next minute
    _note(log, "a" * 26, T, quota="storageBytes")
    _note(log, "b" * 26, T)
    assert len(log) == 4
    assert await log.flush() == 4
    rows = await _stored_hits(app)
    folded = [r for r in rows if r.workspace_id == "a" * 26 and r.quota == "records"]
    assert [(r.hits, r.created_at, r.last_at) for r in folded] == [
        (3, T, T + timedelta(seconds=30)),
        (1, T + timedelta(minutes=1), T + timedelta(minutes=1)),
    ]
    assert len(log) == 0


async def test_only_closed_minutes_are_written_by_the_background_writer(app: FastAPI) -> None:
    log = QuotaHitLog(lambda: app.state.engine, interval=3600)
    now = datetime.now(UTC)
    _note(log, "a" * 26, now - timedelta(minutes=2))
    _note(log, "a" * 26, now)
    assert await log.flush(closed_only=True) == 1
    assert len(log) == 1  # the current minute may still fold more refusals
    await log.close()
    assert len(await _stored_hits(app)) == 2


async def test_open_rows_are_bounded(app: FastAPI) -> None:
    log = QuotaHitLog(lambda: app.state.engine, capacity=3, interval=3600)
    for n in range(10):
        _note(log, f"{n:026d}", T)
    assert len(log) == 3
    _note(log, f"{0:026d}", T)  # an open row still folds more refusals
    assert await log.flush() == 3
    assert sorted(r.hits for r in await _stored_hits(app)) == [1, 1, 2]


async def test_a_log_without_its_database_drops_rows_instead_of_raising() -> None:
    log = QuotaHitLog(lambda: None, interval=3600)
    _note(log, "a" * 26, T)
    assert await log.flush() == 0
    assert len(log) == 0


async def _log_calls(app: FastAPI, workspace_id: str, *moments: datetime) -> None:
    buffer = RequestLogBuffer(app.state.engine, interval=3600)
    await buffer.close()
    for moment in moments:
        buffer.append(log_row(workspace_id=workspace_id, created_at=moment))
    await buffer.flush()


async def _account(app: FastAPI) -> str:
    async with unit_of_work(app.state.sessionmaker) as session:
        account = Account(email=f"{new_id()}@example.com", password_hash="x", name="")
        session.add(account)
        await session.flush()
        return account.id


async def _team_on_plan(app: FastAPI, **quotas: int) -> str:
    account_id = await _account(app)
    async with unit_of_work(app.state.sessionmaker) as session:
        plan = Plan(code=f"p{new_id()[:20]}", name="P", quotas=quotas)
        session.add(plan)
        await session.flush()
        workspace = Workspace(name="W", owner_id=account_id, plan_id=plan.id, personal=False)
        session.add(workspace)
        await session.flush()
        return workspace.id


async def _checked(meter: QuotaMeter, connection: AsyncConnection, workspace_id: str) -> None:
    """A call admitted and ended at once, counted or not by the test itself (`count_call`)."""
    if await meter.check_call(connection, workspace_id):
        meter.end_call(workspace_id, succeeded=False)


async def test_stale_counts_are_refreshed_in_the_background(app: FastAPI) -> None:
    engine = app.state.engine
    workspace_id = await _team_on_plan(app, callsPerMonth=3)
    meter = quota_meter(engine)
    now = datetime.now(UTC)
    await _log_calls(app, workspace_id, now, now)
    async with engine.connect() as connection:
        await _checked(meter, connection, workspace_id)  # 2 of 3: allowed
        # Another node logged a third call; this node learns it once its snapshot is stale.
        await _log_calls(app, workspace_id, now)
        await _checked(meter, connection, workspace_id)
        meter._calls[workspace_id].loaded = time.monotonic() - meter.usage_ttl * 1.5
        await _checked(meter, connection, workspace_id)  # answers from the stale entry
        await asyncio.gather(*meter._tasks)
        with pytest.raises(QuotaExceededError) as caught:
            await _checked(meter, connection, workspace_id)
    details = caught.value.details
    assert (details["quota"], details["limit"], details["used"]) == ("callsPerMonth", 3, 3)


async def test_a_new_month_starts_the_count_afresh(app: FastAPI) -> None:
    engine = app.state.engine
    workspace_id = await _team_on_plan(app, callsPerMonth=1)
    meter = quota_meter(engine)
    last_month = datetime.now(UTC).replace(day=1) - timedelta(days=1)
    await _log_calls(app, workspace_id, last_month)
    async with engine.connect() as connection:
        meter._calls[workspace_id] = CallCount(last_month, 1, 5, time.monotonic())
        await _checked(meter, connection, workspace_id)  # last month's calls don't count
        assert meter._calls[workspace_id].base == 0
        meter.count_call(workspace_id)
        with pytest.raises(QuotaExceededError):
            await _checked(meter, connection, workspace_id)


async def test_plan_changes_reach_the_meter_after_forget_or_refresh(app: FastAPI) -> None:
    engine = app.state.engine
    workspace_id = await _team_on_plan(app, records=1)
    meter = quota_meter(engine)
    async with engine.connect() as connection:
        await meter.reserve_stock(connection, workspace_id, records=1, size=10, operation="t")
        with pytest.raises(QuotaExceededError):
            await meter.reserve_stock(connection, workspace_id, records=1, size=10, operation="t")
    async with unit_of_work(app.state.sessionmaker) as session:
        plan_id = await session.scalar(
            select(Workspace.plan_id).where(Workspace.id == workspace_id)
        )
        await session.execute(update(Plan).where(Plan.id == plan_id).values(quotas={"records": 5}))
    meter.forget(workspace_id)
    async with engine.connect() as connection:
        await meter.reserve_stock(connection, workspace_id, records=1, size=10, operation="t")
        count = await connection.scalar(select(func.count()).select_from(QuotaHit))
    assert count == 0  # the refusal is still in memory, folded until its minute ends
    assert len(meter.hits) == 1


async def test_writes_counted_while_a_snapshot_is_read_are_kept(app: FastAPI) -> None:
    engine = app.state.engine
    workspace_id = await _team_on_plan(app, records=3, callsPerMonth=10)
    meter = quota_meter(engine)
    async with engine.connect() as connection:
        await meter.reserve_stock(connection, workspace_id, records=1, size=5, operation="t")
        await _checked(meter, connection, workspace_id)
        meter._stock[workspace_id].loaded = time.monotonic() - meter.usage_ttl * 1.5
        meter._calls[workspace_id].loaded = time.monotonic() - meter.usage_ttl * 1.5
        # Both reloads start here; a write and a call land before they finish.
        await meter.reserve_stock(connection, workspace_id, records=1, size=7, operation="t")
        await _checked(meter, connection, workspace_id)
        meter.count_call(workspace_id)
        await asyncio.gather(*meter._tasks)
        stock, calls = meter._stock[workspace_id], meter._calls[workspace_id]
        # Nothing was committed, so the snapshots read 0; what was added before they started is
        # in them (here: dropped, as a rollback would be), what came after is carried over.
        assert (stock.records, stock.added_records, stock.added_size) == (0, 1, 7)
        assert (calls.base, calls.local) == (0, 1)
        await meter.reserve_stock(connection, workspace_id, records=2, size=1, operation="t")
        with pytest.raises(QuotaExceededError):
            await meter.reserve_stock(connection, workspace_id, records=1, size=1, operation="t")


async def test_a_long_idle_entry_is_read_again_before_answering(app: FastAPI) -> None:
    """Past two refresh periods a stale count could hide a lot of other nodes' traffic, so the
    check reads the log inline rather than answering from it."""
    engine = app.state.engine
    workspace_id = await _team_on_plan(app, callsPerMonth=2)
    meter = quota_meter(engine)
    async with engine.connect() as connection:
        await _checked(meter, connection, workspace_id)
        now = datetime.now(UTC)
        await _log_calls(app, workspace_id, now, now)  # another node's calls meanwhile
        meter._calls[workspace_id].loaded = time.monotonic() - meter.usage_ttl * 2
        with pytest.raises(QuotaExceededError):
            await _checked(meter, connection, workspace_id)
    assert not meter._tasks
