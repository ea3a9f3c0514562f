"""Retention of the call logs: request-log rows and quota hits older than
`APIFORGE_LOG_RETENTION_DAYS` are deleted in the background, so the two append-only tables stop
growing for good on a long-running platform (0, the default, keeps every row).

Rows go in batches of `BATCH` in short transactions of their own, never one statement over
millions of rows: on SQLite a long delete would hold the single write lock every charged call
needs, on PostgreSQL a huge one bloats the WAL. Request-log ids sort by the time they were
minted (`tools/ids.py`, a few seconds after the call at most), so old rows are found on the
primary key — no index on `created_at` alone, which every call's insert would pay for — and
`created_at` is checked as well, so a row is never deleted before its own time is past the
cut-off. Every server process runs the task; their deletes of the same rows are harmless.

The same hourly task prunes end users' token revocations that can refuse nothing any more
(`engine/revocations.prune_revocations`): always, whatever the logs' retention, as that loses
nothing. Each chore fails on its own: a failing one never skips the other.
"""

import asyncio
import contextlib
from datetime import datetime, timedelta

import structlog
from prometheus_client import Counter
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from apiforge.engine.revocations import prune_revocations
from apiforge.plans.models import QuotaHit
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import first_id_at
from apiforge.tools.streaks import FailureStreak
from apiforge.usage.models import RequestLog

log = structlog.get_logger(__name__)

DELETED = Counter(
    "apiforge_log_rows_expired_total", "Call-log rows deleted past their retention", ["table"]
)

BATCH = 5_000  # rows per delete transaction
MAX_BATCHES = 200  # per table and round: a backlog is worked off over the next rounds
INTERVAL = 3600.0  # seconds between rounds
FIRST_DELAY = 60.0  # after start-up: not while the process is warming up
# `callsPerMonth` counts the current UTC month's calls from the request log: a shorter
# retention would forget calls the quota still counts (core/settings.py refuses it).
MIN_DAYS = 32


async def expire_logs(engine: AsyncEngine, days: int, now: datetime | None = None) -> int:
    """Delete request-log rows and quota hits older than `days` (at most `MAX_BATCHES` batches
    of each); returns how many rows went."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    floor = first_id_at(cutoff.timestamp())
    old_calls = (
        select(RequestLog.id)
        .where(RequestLog.id < floor, RequestLog.created_at < cutoff)
        .order_by(RequestLog.id)
        .limit(BATCH)
    )
    old_hits = select(QuotaHit.id).where(QuotaHit.created_at < cutoff).limit(BATCH)
    removed = 0
    for table, model, old in (
        ("request_logs", RequestLog, old_calls),
        ("quota_hits", QuotaHit, old_hits),
    ):
        for _ in range(MAX_BATCHES):
            async with engine.begin() as connection:
                result = await connection.execute(delete(model).where(model.id.in_(old)))
            count = int(result.rowcount or 0)
            removed += count
            DELETED.labels(table).inc(count)
            if count < BATCH:
                break
            await asyncio.sleep(0)  # the calls' statements go first
    return removed


class LogRetention:
    """The background task of one server process (started and stopped by the app's lifespan):
    the call logs' retention when `days` is set (0: every row kept), and the revocations'
    pruning always."""

    def __init__(self, engine: AsyncEngine, days: int, interval: float = INTERVAL) -> None:
        self.engine = engine
        self.days = days
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._failures = FailureStreak(log, "log_retention_failed", "log_retention_recovered")
        self._pruning = FailureStreak(
            log, "revocation_pruning_failed", "revocation_pruning_recovered"
        )

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        await asyncio.sleep(min(FIRST_DELAY, self.interval))
        while True:
            await self.round()
            await asyncio.sleep(self.interval)

    async def round(self) -> None:
        """One sweep; a failure (a database outage) is logged and must not end the task: the
        next round tries again."""
        if self.days:
            await self._expire_logs()
        try:
            pruned = await prune_revocations(self.engine)
        except Exception:
            self._pruning.failed()
            return
        self._pruning.succeeded()
        if pruned:
            log.info("token_revocations_pruned", rows=pruned)

    async def _expire_logs(self) -> None:
        try:
            removed = await expire_logs(self.engine, self.days)
        except Exception:
            self._failures.failed()
            return
        self._failures.succeeded()
        if removed:
            log.info("log_rows_expired", rows=removed, days=self.days)
