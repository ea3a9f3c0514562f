"""SQLite's WAL copied back into the database file in the background, never on a commit's path.

By default the connection whose commit finds the WAL over 1,000 pages runs the checkpoint
itself, inside that commit: with every charged call a small write, that is a commit every few
dozen calls that copies megabytes and syncs the file while the calls waiting on it stall. Our
connections raise that threshold to a safety bound (`core/db.py`), and this task runs a PASSIVE
checkpoint — which never waits for readers or writers — every 0.1 s on a connection of its
own, in a thread of its own: a checkpoint and the connection's close can never overlap (a
cancelled task does not stop the thread it awaits).
"""

import asyncio
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import structlog

from apiforge.tools.streaks import FailureStreak

log = structlog.get_logger(__name__)


class WalCheckpointer:
    def __init__(self, path: str, interval: float = 0.1) -> None:
        self.path = path
        self.interval = interval
        self._task: asyncio.Task[None] | None = None
        self._connection: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="wal-checkpoint")
        # Ten rounds a second: a failing disk must not write ten tracebacks a second.
        self._failures = FailureStreak(log, "wal_checkpoint_failed", "wal_checkpoint_recovered")

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="wal-checkpoint")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # Queued behind a checkpoint still running in the thread, never beside it.
        await asyncio.get_running_loop().run_in_executor(self._thread, self._close)
        self._thread.shutdown(wait=True)

    def _close(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            connection.close()

    async def checkpoint(self) -> tuple[int, int, int]:
        """(busy, WAL frames, frames copied) of one PASSIVE checkpoint."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._checkpoint)

    def _checkpoint(self) -> tuple[int, int, int]:
        if self._connection is None:
            self._connection = sqlite3.connect(self.path, timeout=5, check_same_thread=False)
        row = self._connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.round()

    async def round(self) -> None:
        """One checkpoint; a failure is logged, and the next round tries again (the WAL's
        safety bound holds meanwhile)."""
        try:
            await self.checkpoint()
        except Exception:
            self._failures.failed()
        else:
            self._failures.succeeded()
