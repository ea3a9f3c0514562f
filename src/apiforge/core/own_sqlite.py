"""A process's own connection to the embedded database file, beside the pool.

Billing's charge writer and the idempotency store each keep one: their work queues on its
aiosqlite thread, in order, with no pool checkout, so a call that only reads never needs a
pooled connection at all. Opened on first use with the pool's pragmas; once closed, never
reopened (nothing would close it again), and a call arriving then is told to retry.
"""

import asyncio
import sqlite3
from collections.abc import Callable
from typing import Any

import aiosqlite

from apiforge.core.db import SQLITE_PRAGMAS
from apiforge.core.errors import UnavailableError


class OwnSqlite:
    def __init__(self, path: str) -> None:
        self.path = path
        self.connection: aiosqlite.Connection | None = None
        self._opening = asyncio.Lock()
        self._closed = False

    async def get(self) -> aiosqlite.Connection:
        """The connection, opened on the first call (concurrent first calls open one)."""
        if self.connection is not None:
            return self.connection
        async with self._opening:
            if self._closed:
                raise UnavailableError("The server is stopping; retry the call")
            if self.connection is None:
                connection = await aiosqlite.connect(self.path)
                try:
                    for pragma in SQLITE_PRAGMAS:
                        await connection.execute(pragma)
                except BaseException:
                    # A call cancelled (its client gone) or a pragma refused while opening: the
                    # connection would otherwise be dropped open, its thread left running.
                    connection.stop()
                    raise
                self.connection = connection
            return self.connection

    async def close(self, last: Callable[[sqlite3.Connection], object] | None = None) -> None:
        """Refuse new openings, let one in progress finish, run `last` on the connection's
        thread after the work queued before it (what waits for a commit), then close."""
        self._closed = True
        async with self._opening:
            pass
        connection = self.connection
        if connection is None:
            return
        self.connection = None
        try:
            if last is not None:
                driver: Any = connection
                await driver._execute(last, driver._conn)
        finally:
            await connection.close()
