"""The idempotency store's hands on the embedded database: its own connection (`OwnConnection`),
a call's driver connection (`call_db`), and work run there in one hop with its commit.

Everything here runs functions on aiosqlite's thread, where the sqlite3 connection lives, so a
claim or a completion is one hop whatever its statements.
"""

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.own_sqlite import OwnSqlite


@dataclass(frozen=True, slots=True)
class StoreDb:
    """aiosqlite's connection: `raw` is its sqlite3 connection, used only inside `run`, which
    executes a function in aiosqlite's own thread (one hop, in order with its other work)."""

    driver: Any

    @property
    def raw(self) -> sqlite3.Connection:
        raw: sqlite3.Connection = self.driver._conn
        return raw

    async def run(self, fn: Any) -> Any:
        return await self.driver._execute(fn)


class OwnConnection:
    """The store's own connection to the embedded database file (`OwnSqlite`), shared by the
    process's requests; aiosqlite runs their functions in order on its thread."""

    def __init__(self, path: str) -> None:
        self._own = OwnSqlite(path)
        self._db: StoreDb | None = None

    async def get(self) -> StoreDb:
        if self._db is None:
            self._db = StoreDb(await self._own.get())
        return self._db

    async def close(self) -> None:
        self._db = None
        await self._own.close()


async def call_db(conn: AsyncConnection) -> StoreDb | None:
    """The embedded database's driver connection of a call, when it has the aiosqlite layout we
    use (as billing/charging.py does); None on PostgreSQL or another layout (the portable path)."""
    if conn.dialect.name != "sqlite":
        return None
    raw = await conn.get_raw_connection()
    driver: Any = raw.driver_connection
    if not (hasattr(driver, "_execute") and hasattr(driver, "_conn")):
        return None
    return StoreDb(driver)


async def run_committed(db: StoreDb, work: Callable[[sqlite3.Connection], Any]) -> Any:
    """`work(connection)` and its commit in one hop on `db`; its result."""

    def run() -> Any:
        sql = db.raw
        try:
            result = work(sql)
            sql.commit()
        except BaseException:
            sql.rollback()
            raise
        return result

    return await db.run(run)


def rowcount(statement: str, params: tuple[Any, ...]) -> Callable[[sqlite3.Connection], int]:
    """One statement, as work for `run_committed`: the number of rows it changed."""
    return lambda db: int(db.execute(statement, params).rowcount)


_READ_RECORD = (
    "SELECT fingerprint, owner, status, headers, body, expires_at "
    "FROM idempotency_records WHERE id = ?"
)


def read_record(record_id: str, db: sqlite3.Connection) -> Any:
    """A key's row of `idempotency_records` (the portable path's claim or answer), or None."""
    return db.execute(_READ_RECORD, (record_id,)).fetchone()
