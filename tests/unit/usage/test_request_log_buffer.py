"""The request-log buffer against the real database: batching, bounds, retries, draining."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from prometheus_client import REGISTRY
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from apiforge.core.db import make_engine
from apiforge.usage.buffer import MAX_ARGS_BYTES, RequestLogBuffer
from apiforge.usage.models import RequestLog
from tests.unit.usage._rows import log_row


def _metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@contextmanager
def _inserts(engine: AsyncEngine) -> Iterator[list[str]]:
    """The request-log INSERT statements the engine sends to the database meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO REQUEST_LOGS"):
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def _stored(engine: AsyncEngine) -> list[RequestLog]:
    async with engine.connect() as connection:
        rows = await connection.execute(select(RequestLog).order_by(RequestLog.request_id))
        return [RequestLog(**row._asdict()) for row in rows]


async def _count(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(await connection.scalar(select(func.count()).select_from(RequestLog)) or 0)


class _ObservedBuffer(RequestLogBuffer):
    """Signals each successful write, so a test can await the background writer's work."""

    def __init__(self, engine: AsyncEngine, **options: Any) -> None:
        super().__init__(engine, **options)
        self.wrote = asyncio.Event()

    async def _write(self, batch: list[dict[str, Any]]) -> bool:
        done = await super()._write(batch)
        if done:
            self.wrote.set()
        return done


async def test_flush_writes_the_queue_in_one_multi_row_insert(app: FastAPI) -> None:
    engine = app.state.engine
    buffer = RequestLogBuffer(engine)
    rows = [log_row() for _ in range(5)]
    for row in rows:
        buffer.append(row)
    with _inserts(engine) as statements:
        assert await buffer.flush() == 5
    assert len(statements) == 1
    # One statement carrying every row: five parenthesised value groups.
    assert statements[0].upper().count("VALUES") == 1
    assert statements[0].count("), (") == 4
    stored = await _stored(engine)
    assert [r.request_id for r in stored] == sorted(r["request_id"] for r in rows)
    first = next(r for r in stored if r.request_id == rows[0]["request_id"])
    assert (first.args, first.status, first.workspace_id) == (rows[0]["args"], 200, "w" * 26)
    assert first.created_at == rows[0]["created_at"]
    assert len(buffer) == 0
    await buffer.close()


async def test_large_queues_are_written_in_batches(app: FastAPI) -> None:
    engine = app.state.engine
    buffer = RequestLogBuffer(engine, batch_size=2, interval=3600)
    await buffer.close()  # no background writer: this test drives every write itself
    for _ in range(5):
        buffer.append(log_row())
    with _inserts(engine) as statements:
        assert await buffer.flush() == 5
    assert len(statements) == 3
    assert await _count(engine) == 5


async def test_a_full_buffer_drops_the_oldest_rows_and_counts_them(app: FastAPI) -> None:
    engine = app.state.engine
    buffer = RequestLogBuffer(engine, capacity=3, interval=3600)
    await buffer.close()
    before = _metric("apiforge_request_logs_dropped_total", cause="buffer_full")
    rows = [log_row() for _ in range(5)]
    for row in rows:
        buffer.append(row)  # never blocks, never waits for the database
    assert len(buffer) == 3
    assert _metric("apiforge_request_logs_dropped_total", cause="buffer_full") == before + 2
    assert await buffer.flush() == 3
    assert [r.request_id for r in await _stored(engine)] == [r["request_id"] for r in rows[2:]]


async def test_the_writer_flushes_on_its_interval_without_being_asked(app: FastAPI) -> None:
    engine = app.state.engine
    buffer = _ObservedBuffer(engine, interval=0.05)
    buffer.append(log_row())
    await asyncio.wait_for(buffer.wrote.wait(), 10)  # bounded: a hang fails the test
    assert len(buffer) == 0
    assert await _count(engine) == 1
    await buffer.close()


async def test_a_full_batch_wakes_the_writer_before_its_interval(app: FastAPI) -> None:
    engine = app.state.engine
    buffer = _ObservedBuffer(engine, batch_size=3, interval=3600)
    for _ in range(3):
        buffer.append(log_row())
    # The interval is an hour: only the batch-size wake-up can write these.
    await asyncio.wait_for(buffer.wrote.wait(), 10)
    assert await _count(engine) == 3
    await buffer.close()


async def test_a_failed_batch_is_kept_retried_and_dropped_after_three_failures(
    app: FastAPI, tmp_path: Path
) -> None:
    broken = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # no request_logs table
    buffer = RequestLogBuffer(broken, interval=3600)
    await buffer.close()
    errors = _metric("apiforge_request_log_flush_errors_total")
    dropped = _metric("apiforge_request_logs_dropped_total", cause="write_failed")
    kept = log_row()
    buffer.append(kept)
    assert await buffer.flush() == 0
    assert len(buffer) == 1
    # The database comes back: the kept batch is written first.
    buffer.engine = app.state.engine
    assert await buffer.flush() == 1
    assert [r.request_id for r in await _stored(app.state.engine)] == [kept["request_id"]]

    buffer.engine = broken
    buffer.append(log_row())
    buffer.append(log_row())
    assert [await buffer.flush() for _ in range(3)] == [0, 0, 0]
    assert len(buffer) == 0
    assert _metric("apiforge_request_log_flush_errors_total") == errors + 4
    assert _metric("apiforge_request_logs_dropped_total", cause="write_failed") == dropped + 2
    await broken.dispose()


async def test_rows_a_database_would_refuse_are_cleaned_not_lost(app: FastAPI) -> None:
    engine = app.state.engine
    buffer = RequestLogBuffer(engine, interval=3600)
    await buffer.close()
    nul = log_row(
        app_id="app\x00id",
        reason="bad\x00reason",
        args={"text": "a\x00b", "nested": [{"k\x00": "\x00"}], "n": 1},
    )
    huge = log_row(args={"blob": "x" * MAX_ARGS_BYTES})
    buffer.append(nul)
    buffer.append(huge)
    assert await buffer.flush() == 2
    stored = {r.request_id: r for r in await _stored(engine)}
    cleaned = stored[nul["request_id"]]
    assert (cleaned.app_id, cleaned.reason) == ("appid", "badreason")
    assert cleaned.args == {"text": "ab", "nested": [{"k": ""}], "n": 1}
    assert stored[huge["request_id"]].args is None


async def test_close_drains_the_queue_and_stops_the_writer(app: FastAPI) -> None:
    engine = app.state.engine
    buffer = RequestLogBuffer(engine, interval=3600)
    for _ in range(4):
        buffer.append(log_row())
    task = buffer._task
    assert task is not None
    assert not task.done()
    await buffer.close()
    assert task.done()
    assert await _count(engine) == 4
    # After shutdown nothing restarts the writer; an explicit flush still writes.
    buffer.append(log_row())
    assert buffer._task is None
    assert await buffer.flush() == 1
    assert await _count(engine) == 5
