"""The WAL is copied back by the background checkpointer, not by the commits that fill it."""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from apiforge.app import wal_checkpointer
from apiforge.core.checkpoint import WalCheckpointer
from apiforge.core.db import SQLITE_PRAGMAS, make_engine
from apiforge.core.settings import Settings


def _wal_pages(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size // 4096 if wal.exists() else 0


async def test_commits_leave_the_wal_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x BLOB)")
        for _ in range(60):  # ~1,500 pages: over SQLite's default 1,000-page checkpoint
            async with engine.begin() as conn:
                await conn.exec_driver_sql("INSERT INTO t VALUES (zeroblob(100000))")
        assert _wal_pages(path) > 1000  # no commit checkpointed it
        checkpointer = WalCheckpointer(str(path))
        busy, frames, copied = await checkpointer.checkpoint()
        await checkpointer.stop()
        assert busy == 0
        assert copied == frames > 1000
        with sqlite3.connect(path) as check:
            assert check.execute("SELECT count(*) FROM t").fetchone() == (60,)
    finally:
        await engine.dispose()


def test_only_sqlite_files_get_a_checkpointer(tmp_path: Path) -> None:
    assert wal_checkpointer(Settings(data_dir=tmp_path)) is not None
    pg = Settings(data_dir=tmp_path, database_url="postgresql+asyncpg://u@h/db")
    assert wal_checkpointer(pg) is None
    assert any("wal_autocheckpoint" in pragma for pragma in SQLITE_PRAGMAS)


async def test_stop_waits_for_a_running_checkpoint_before_closing(tmp_path: Path) -> None:
    """Closing the connection while a checkpoint runs on it in another thread can crash the
    process: stop() cancels the loop and queues the close behind whatever is running."""
    path = tmp_path / "busy.db"
    with sqlite3.connect(path) as setup:
        setup.execute("PRAGMA journal_mode=WAL")
        setup.execute("CREATE TABLE t (x INTEGER)")
    for _ in range(20):
        checkpointer = WalCheckpointer(str(path), interval=0)
        checkpointer.start()
        await asyncio.sleep(0.005)  # checkpoints back to back in the checkpointer's thread
        await checkpointer.stop()
        assert checkpointer._connection is None
        with pytest.raises(RuntimeError):  # its thread is gone with it
            await checkpointer.checkpoint()
