"""The quota-hit log: refusals for reached quotas, folded per minute and written in the background.

A refusal must cost the refused request nothing it could abuse: `record` is a dict update and
nothing else, never a database round trip. Refusals of one (workspace, quota, operation) within
one UTC minute fold into a single row that counts them (`hits`), kept in memory until its minute
is over and then written by a background task, one multi-row INSERT per batch. So a client
hammering a reached quota adds at most one row a minute, however fast it calls.

Memory is bounded: beyond `capacity` open rows, new keys are dropped and counted (a metric), so
refusals spread over a huge number of workspaces can't grow the process. `flush()` writes every
open row now (tests, shutdown); a refusal after a forced flush in the same minute starts a new row.
"""

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from apiforge.plans.models import QuotaHit
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id

log = structlog.get_logger(__name__)

DROPPED = Counter(
    "apiforge_quota_hits_dropped_total",
    "Quota-hit rows dropped (too many open rows, or a batch failed to write)",
    ["cause"],
)
REFUSED = Counter(
    "apiforge_quota_refusals_total", "Requests refused for a reached quota", ["quota"]
)

CAPACITY = 10_000  # open rows held at most
INTERVAL = 5.0  # seconds between looks for rows whose minute is over
BATCH_SIZE = 500

Key = tuple[str, str, str, datetime]
_INSERT = insert(QuotaHit).returning(QuotaHit.id)


class QuotaHitLog:
    """Per-process buffer of quota refusals with a background writer."""

    def __init__(
        self,
        engine: Callable[[], AsyncEngine | None],
        *,
        capacity: int = CAPACITY,
        interval: float = INTERVAL,
    ) -> None:
        self._engine = engine
        self.capacity = capacity
        self.interval = interval
        self._open: dict[Key, dict[str, Any]] = {}
        self._task: asyncio.Task[None] | None = None
        self._lock: asyncio.Lock | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self._open)

    def record(
        self,
        *,
        workspace_id: str,
        plan_id: str,
        quota: str,
        operation: str,
        limit: int,
        used: int,
        now: datetime | None = None,
    ) -> None:
        """Note one refusal. Never blocks, never touches the database; must run on the loop."""
        REFUSED.labels(quota).inc()
        now = now or utcnow()
        key = (workspace_id, quota, operation, now.replace(second=0, microsecond=0))
        row = self._open.get(key)
        if row is not None:
            # The row shows the last refusal's plan and figures: a plan changed within the
            # minute must not leave `used` beside a limit that no longer applied.
            row["hits"] += 1
            row["last_at"] = now
            row["plan_id"] = plan_id
            row["quota_limit"] = limit
            row["used"] = used
            return
        if len(self._open) >= self.capacity:
            DROPPED.labels("buffer_full").inc()
            return
        self._open[key] = {
            "workspace_id": workspace_id,
            "plan_id": plan_id,
            "quota": quota,
            "operation": operation[:64],
            "quota_limit": limit,
            "used": used,
            "hits": 1,
            "created_at": now,
            "last_at": now,
        }
        self._ensure_writer()

    async def flush(self, *, closed_only: bool = False) -> int:
        """Write open rows now (only those whose minute is over with `closed_only`); returns how
        many were written. A failed batch is logged and dropped (a count, not money)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            current = utcnow().replace(second=0, microsecond=0)
            keys = [key for key in self._open if not closed_only or key[3] < current]
            rows = [self._open.pop(key) for key in keys]
            written = 0
            for start in range(0, len(rows), BATCH_SIZE):
                written += await self._write(rows[start : start + BATCH_SIZE])
            return written

    async def close(self) -> None:
        """Stop the writer and write every open row (app shutdown)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            if self._lock is None:
                self._lock = asyncio.Lock()
            # Under the writer's lock: a write in progress ends first, as cancelled half-way
            # it would lose its rows (out of `_open` already).
            async with self._lock:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()

    def _ensure_writer(self) -> None:
        if self._closed:
            return
        loop = asyncio.get_running_loop()
        task = self._task
        if task is None or task.done() or task.get_loop() is not loop:
            if task is not None and task.get_loop() is not loop:
                self._lock = None  # a lock belongs to one loop
            self._task = loop.create_task(self._run(), name="quota-hit-writer")

    async def _run(self) -> None:
        while not self._closed and self._open:
            await asyncio.sleep(self.interval)
            try:
                await self.flush(closed_only=True)
            except Exception:  # the writer must outlive any one failure
                log.exception("quota_hit_flush_crashed")

    async def _write(self, rows: list[dict[str, Any]]) -> int:
        engine = self._engine()
        if engine is None:
            DROPPED.labels("no_engine").inc(len(rows))
            return 0
        try:
            async with engine.begin() as connection:
                await connection.execute(_INSERT, [{"id": new_id(), **row} for row in rows])
        except Exception as exc:
            log.error("quota_hits_dropped", rows=len(rows), error=repr(exc))
            DROPPED.labels("write_failed").inc(len(rows))
            return 0
        return len(rows)
