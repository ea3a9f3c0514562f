"""The SQLite pool: few connections, and a returned connection rolled back only when it holds a
transaction (a read-only connection goes back without a round trip)."""

from pathlib import Path
from typing import Any

from sqlalchemy import make_url

from apiforge.core.db import SQLITE_POOL_SIZE, make_engine, sqlite_file


async def test_sqlite_connection_with_uncommitted_write_is_rolled_back_on_return(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}", pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            await conn.commit()
        async with engine.connect() as conn:
            raw = await conn.get_raw_connection()
            driver: Any = raw.driver_connection
            await driver.execute("INSERT INTO t VALUES (1)")  # behind SQLAlchemy's back
            assert driver.in_transaction
        rolled_back = []
        async with engine.connect() as conn:  # the same (only) connection, reset on return
            raw = await conn.get_raw_connection()
            same = raw.driver_connection is driver
            assert same
            rolled_back.append(not driver.in_transaction)
            rows = (await conn.exec_driver_sql("SELECT count(*) FROM t")).scalar_one()
        assert rolled_back == [True]
        assert rows == 0
        async with engine.connect() as conn:  # a read-only connection stays clean
            await conn.exec_driver_sql("SELECT 1")
        async with engine.connect() as conn:
            again: Any = (await conn.get_raw_connection()).driver_connection
            assert not again.in_transaction
    finally:
        await engine.dispose()


def test_sqlite_pool_is_small_by_default(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'pool.db'}")
    assert engine.pool.size() == SQLITE_POOL_SIZE  # type: ignore[attr-defined]


def test_sqlite_file_names_only_real_sqlite_files(tmp_path: Path) -> None:
    path = str(tmp_path / "a.db")
    assert sqlite_file(f"sqlite+aiosqlite:///{path}") == path
    assert sqlite_file(make_url(f"sqlite+aiosqlite:///{path}")) == path
    for other in (
        "sqlite+aiosqlite://",
        "sqlite+aiosqlite:///:memory:",
        "sqlite+aiosqlite:///file:shared?mode=memory&uri=true",
        "postgresql+asyncpg://u@h/db",
    ):
        assert sqlite_file(other) is None, other
