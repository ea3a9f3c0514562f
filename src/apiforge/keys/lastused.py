"""`lastUsedTime` of keys without a database write per call.

Each use only records `key id → time` in a dict (O(1), no I/O). A background task, started on the
first use, writes the collected times every `interval` seconds in one batched statement, and
`close()` writes the rest at shutdown. The UPDATE only moves a time forward, so nodes flushing in
any order never make a key look older than it is. Lists merge the not-yet-written times of this
process (`pending`), so on one node they are exact and across nodes at most `interval` behind.
"""

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import structlog
from sqlalchemy import bindparam, or_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from apiforge.keys.models import ApiKey
from apiforge.tools.streaks import FailureStreak

log = structlog.get_logger("apiforge.keys")

_FLUSH = (
    update(ApiKey)
    .where(
        ApiKey.id == bindparam("key_id"),
        or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < bindparam("used")),
    )
    .values(last_used_at=bindparam("used"))
)


class LastUsedTracker:
    def __init__(self, engine: AsyncEngine, *, interval: float = 15.0) -> None:
        self.engine = engine
        self.interval = interval
        self._pending: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # While the database is down every round fails: one traceback per outage, not per round.
        self._failures = FailureStreak(log, "last_used_flush_failed", "last_used_flush_recovered")

    def touch(self, key_id: str) -> None:
        """Record a use now; starts the flusher on first use."""
        self._pending[key_id] = time.time()
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def pending(self, key_id: str) -> datetime | None:
        when = self._pending.get(key_id)
        return None if when is None else datetime.fromtimestamp(int(when), UTC)

    async def flush(self) -> int:
        """Write what was collected; returns how many keys were written. On failure the times
        are kept for the next flush (a newer use of the same key wins)."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        # In key order: two nodes flushing the same keys at once lock their rows in the same
        # order, so one waits for the other instead of both deadlocking (PostgreSQL).
        rows = [
            {"key_id": key_id, "used": datetime.fromtimestamp(int(when), UTC)}
            for key_id, when in sorted(batch.items())
        ]
        try:
            async with self.engine.begin() as connection:
                await connection.execute(_FLUSH, rows)
        except BaseException as exc:  # also cancellation mid-write: nothing collected is lost
            for key_id, when in batch.items():
                self._pending[key_id] = max(when, self._pending.get(key_id, 0.0))
            if not isinstance(exc, Exception):
                raise
            self._failures.failed(keys=len(rows))
            return 0
        self._failures.succeeded()
        return len(rows)

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            if task.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.flush()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()
