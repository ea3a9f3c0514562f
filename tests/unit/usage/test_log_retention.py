"""Retention of the call logs (`APIFORGE_LOG_RETENTION_DAYS`): old request-log rows and quota
hits go, in batches, without touching newer rows, the ledger or the month `callsPerMonth` reads."""

import asyncio
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from apiforge.app import create_app
from apiforge.core.settings import InvalidSettingsError, Settings
from apiforge.plans.models import QuotaHit
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import first_id_at, new_id
from apiforge.usage import retention
from apiforge.usage.models import RequestLog
from apiforge.usage.retention import LogRetention, expire_logs
from tests.unit.usage._rows import log_row

pytestmark = pytest.mark.anyio


def _minted_at(moment: datetime) -> str:
    """An id as `new_id()` would have minted it at `moment` (its 10 time digits, then random)."""
    return first_id_at(moment.timestamp())[:10] + new_id()[10:]


async def _add_calls(engine: AsyncEngine, *moments: datetime, **fields: Any) -> list[str]:
    rows = [log_row(id=_minted_at(m), created_at=m, **fields) for m in moments]
    async with engine.begin() as connection:
        await connection.execute(insert(RequestLog), rows)
    return [row["request_id"] for row in rows]


async def _add_hits(engine: AsyncEngine, *moments: datetime) -> None:
    rows = [
        {
            "id": _minted_at(m),
            "created_at": m,
            "last_at": m,
            "workspace_id": "w" * 26,
            "plan_id": "p" * 26,
            "quota": "callsPerMonth",
            "operation": "call",
            "quota_limit": 10,
            "used": 10,
            "hits": 1,
        }
        for m in moments
    ]
    async with engine.begin() as connection:
        await connection.execute(insert(QuotaHit), rows)


async def _calls(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as connection:
        return set((await connection.scalars(select(RequestLog.request_id))).all())


async def _hits(engine: AsyncEngine) -> list[datetime]:
    async with engine.connect() as connection:
        return list((await connection.scalars(select(QuotaHit.created_at))).all())


async def test_rows_past_the_retention_go_and_newer_ones_stay(app: FastAPI) -> None:
    engine = app.state.engine
    now = utcnow()
    old = await _add_calls(engine, now - timedelta(days=41), now - timedelta(days=40, hours=1))
    kept = await _add_calls(engine, now - timedelta(days=39, hours=23), now - timedelta(hours=1))
    await _add_hits(engine, now - timedelta(days=45), now - timedelta(days=2))

    removed = await expire_logs(engine, 40, now=now)

    assert removed == 3
    assert await _calls(engine) == set(kept)
    assert not set(old) & await _calls(engine)
    assert [hit.date() for hit in await _hits(engine)] == [(now - timedelta(days=2)).date()]
    assert await expire_logs(engine, 40, now=now) == 0  # nothing left to do


async def test_a_row_is_never_deleted_before_its_own_time_is_past(app: FastAPI) -> None:
    """Ids are minted when the row is written, a little after the call: an old id alone does not
    make a row old."""
    engine = app.state.engine
    now = utcnow()
    moment = now - timedelta(days=10)
    row = log_row(id=_minted_at(now - timedelta(days=50)), created_at=moment)
    async with engine.begin() as connection:
        await connection.execute(insert(RequestLog), [row])

    assert await expire_logs(engine, 32, now=now) == 0
    assert await _calls(engine) == {row["request_id"]}


async def test_a_backlog_goes_in_batches(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = app.state.engine
    monkeypatch.setattr(retention, "BATCH", 3)
    now = utcnow()
    old = [now - timedelta(days=100, seconds=i) for i in range(10)]
    await _add_calls(engine, *old)
    kept = await _add_calls(engine, now)
    await _add_hits(engine, *old)
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("DELETE"):
            statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    assert await expire_logs(engine, 32, now=now) == 20
    event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert len(statements) == 8  # 3+3+3+1 rows of each table, a statement each
    assert await _calls(engine) == set(kept)
    assert await _hits(engine) == []


async def test_one_round_stops_after_its_batches(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A huge backlog is worked off over several rounds, never one endless round."""
    engine = app.state.engine
    monkeypatch.setattr(retention, "BATCH", 2)
    monkeypatch.setattr(retention, "MAX_BATCHES", 2)
    now = utcnow()
    await _add_calls(engine, *(now - timedelta(days=60, seconds=i) for i in range(7)))

    assert await expire_logs(engine, 32, now=now) == 4
    assert await expire_logs(engine, 32, now=now) == 3
    assert await _calls(engine) == set()


async def test_the_background_task_expires_rows_and_stops(app: FastAPI) -> None:
    engine = app.state.engine
    now = utcnow()
    await _add_calls(engine, now - timedelta(days=90))
    kept = await _add_calls(engine, now)
    task = LogRetention(engine, 32, interval=0.01)
    task.start()
    try:
        for _ in range(500):
            if await _calls(engine) == set(kept):
                break
            await asyncio.sleep(0.01)
        assert await _calls(engine) == set(kept)
    finally:
        await task.stop()
    await task.stop()  # twice is harmless


async def test_the_task_outlives_a_failing_round(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = app.state.engine
    rounds: list[int] = []

    async def flaky(_engine: AsyncEngine, _days: int) -> int:
        rounds.append(1)
        if len(rounds) == 1:
            raise ConnectionError("database away")
        return 0

    monkeypatch.setattr(retention, "expire_logs", flaky)
    task = LogRetention(engine, 32, interval=0.01)
    task.start()
    try:
        for _ in range(500):
            if len(rounds) >= 3:
                break
            await asyncio.sleep(0.01)
    finally:
        await task.stop()
    assert len(rounds) >= 3


@pytest.mark.parametrize("days", [1, 31, -1, 36501])
def test_a_retention_shorter_than_the_month_quota_is_refused(days: int) -> None:
    with pytest.raises(InvalidSettingsError, match="LOG_RETENTION_DAYS"):
        Settings(log_retention_days=days)


@pytest.mark.parametrize("days", [0, 32, 365])
def test_zero_or_a_month_and_more_is_accepted(days: int) -> None:
    assert Settings(log_retention_days=days).log_retention_days == days


async def test_the_server_runs_the_task_whatever_the_retention(settings: Settings) -> None:
    """With 0 too: it prunes expired token revocations (test_token_revocation_pruning.py)."""

    def running() -> bool:
        return any(t.get_name() == "retention" for t in asyncio.all_tasks())

    for days in (0, 32):
        application = create_app(settings.model_copy(update={"log_retention_days": days}))
        async with application.router.lifespan_context(application):
            assert running()
        assert not running()


async def test_with_no_retention_a_round_keeps_every_log_row(app: FastAPI) -> None:
    engine = app.state.engine
    kept = await _add_calls(engine, utcnow() - timedelta(days=4000))
    await LogRetention(engine, 0).round()
    assert await _calls(engine) == set(kept)
