"""The request-log buffer: calls append rows in memory; a background task writes them in batches.

A gateway call must never wait for its own log line, so `append` is a deque append and nothing
else. The buffer is bounded: when writes fall behind (a slow or unreachable database) the oldest
rows are dropped and counted, so memory stays flat and calls are never blocked. A task started
with the first row writes every `interval` seconds, or sooner once `batch_size` rows wait, in one
multi-row INSERT per batch. `close()` (app shutdown) writes what is left; `flush()` writes now and
returns when done, which is what tests await instead of sleeping.
"""

import asyncio
import contextlib
from collections import deque
from typing import Any

import orjson
import structlog
from prometheus_client import Counter
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from apiforge.tools.ids import new_id
from apiforge.usage.models import RequestLog

log = structlog.get_logger(__name__)

DROPPED = Counter(
    "apiforge_request_logs_dropped_total",
    "Request-log rows dropped (buffer full, or a batch failed to write three times)",
    ["cause"],
)
WRITTEN = Counter("apiforge_request_logs_written_total", "Request-log rows written")
FLUSH_ERRORS = Counter("apiforge_request_log_flush_errors_total", "Failed request-log batch writes")

CAPACITY = 20_000  # rows held at most; beyond, the oldest go first
BATCH_SIZE = 500  # rows per INSERT (x 17 params stays far below SQLite's and asyncpg's limits)
INTERVAL = 0.5  # seconds between writes when fewer than BATCH_SIZE rows wait
MAX_ATTEMPTS = 3  # a failed batch is retried on the next rounds, then dropped
MAX_ARGS_BYTES = 16 * 1024  # larger args are not kept (the row says so with `args: null`)

Row = dict[str, Any]

# An executemany of INSERT ... RETURNING is what makes SQLAlchemy render one multi-row
# `INSERT ... VALUES (...), (...)` per batch ("insertmanyvalues") on SQLite and PostgreSQL alike,
# with its statement cache; `insert().values([...])` builds a bind object per value instead and
# costs ~40x the CPU for the same batch, on the event loop every call shares.
_INSERT = insert(RequestLog).returning(RequestLog.id)


class RequestLogBuffer:
    """Bounded in-process queue of request-log rows with a background writer."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        capacity: int = CAPACITY,
        batch_size: int = BATCH_SIZE,
        interval: float = INTERVAL,
    ) -> None:
        self.engine = engine
        self.capacity = capacity
        self.batch_size = batch_size
        self.interval = interval
        self._rows: deque[Row] = deque()
        self._failed: list[Row] = []
        self._attempts = 0
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._rows) + len(self._failed)

    def append(self, row: Row) -> None:
        """Queue one row; never blocks, never touches the database. Must run on the event loop."""
        if len(self._rows) >= self.capacity:
            self._rows.popleft()
            DROPPED.labels("buffer_full").inc()
        self._rows.append(row)
        if self._closed:
            return
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            self._start()
        elif len(self._rows) >= self.batch_size and self._wake is not None:
            self._wake.set()

    async def flush(self) -> int:
        """Write every queued row now (in batches); returns how many were written. A batch that
        fails stays queued for a later attempt; the error is logged, not raised."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        written = 0
        async with self._lock:
            while self._failed or self._rows:
                if self._failed:
                    batch = self._failed
                else:
                    count = min(self.batch_size, len(self._rows))
                    batch = [self._rows.popleft() for _ in range(count)]
                self._failed = []
                if not await self._write(batch):
                    break
                written += len(batch)
        return written

    async def close(self) -> None:
        """Stop the writer and write what is left (app shutdown). Rows appended afterwards are
        kept until the next `flush()`."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            if self._wake is not None:
                self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    def _start(self) -> None:
        """(Re)start the writer on the running loop. Event and lock belong to one loop, so they
        are made anew when the loop changed (a writer left on a closed loop never runs again)."""
        loop = asyncio.get_running_loop()
        if self._task is not None and self._task.get_loop() is not loop:
            self._lock = None
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._run(self._wake), name="request-log-writer")

    async def _run(self, wake: asyncio.Event) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), self.interval)
            wake.clear()
            if self._closed:
                return
            try:
                await self.flush()
            except Exception:  # the writer must outlive any one failure
                log.exception("request_log_flush_crashed")

    async def _write(self, batch: list[Row]) -> bool:
        try:
            rows = [_storable(row) for row in batch]
            async with self.engine.begin() as connection:
                await connection.execute(_INSERT, rows)
        except Exception as exc:
            FLUSH_ERRORS.inc()
            self._attempts += 1
            if self._attempts >= MAX_ATTEMPTS:
                log.error("request_log_batch_dropped", rows=len(batch), error=repr(exc))
                DROPPED.labels("write_failed").inc(len(batch))
                self._attempts = 0
            else:
                log.warning("request_log_write_failed", rows=len(batch), error=repr(exc))
                self._failed = batch
            return False
        self._attempts = 0
        WRITTEN.inc(len(batch))
        return True


def _storable(row: Row) -> Row:
    """Make a row safe to insert on every backend: args over the size cap are dropped, and NUL
    characters (which PostgreSQL text and JSONB refuse) are removed, so no single call can make
    a whole batch fail. Runs in the writer, off the call's path; a row without an id gets one."""
    stored = {key: _text(value) if isinstance(value, str) else value for key, value in row.items()}
    # Ids are minted here, in queue order (so still time-sortable), not on the call's path.
    if not stored.get("id"):
        stored["id"] = new_id()
    if row["args"] is not None:
        stored["args"] = _kept_args(row["args"])
    return stored


def _kept_args(args: Any) -> Any:
    """`args` as they can be stored: None when too large (or not JSON after all). A call's
    JSON body may hold `NaN` or `Infinity` (the parser accepts them), which no JSON column
    takes (PostgreSQL refuses the row, and with it its whole batch or the call's charge): they
    are stored as `null`, as orjson writes them. A `null` anywhere is the only sign of one, so
    only then are the args read back from their encoding."""
    try:
        encoded = orjson.dumps(args)
    except orjson.JSONEncodeError:
        return None
    if len(encoded) > MAX_ARGS_BYTES:
        return None
    if b"null" in encoded:
        args = orjson.loads(encoded)
    return _without_nul(args) if b"\\u0000" in encoded else args


def _text(value: str) -> str:
    return value.replace("\x00", "") if "\x00" in value else value


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, dict):
        return {_text(str(key)): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value
