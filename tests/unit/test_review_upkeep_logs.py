"""The background upkeep tasks while what they maintain fails round after round — the WAL
checkpoint (ten rounds a second), the answer log's sync and sweep (one a second) and the call
logs' retention (with its pruning of token revocations): one traceback per streak, a one-line
warning with the streak's length for each later failure, and one line when a round succeeds
again (`tools/streaks.py`)."""

import sqlite3
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from apiforge.core.checkpoint import WalCheckpointer
from apiforge.core.db import make_engine
from apiforge.core.settings import Settings
from apiforge.idempotency.answer_log import AnswerLog
from apiforge.migrate import upgrade
from apiforge.usage.retention import LogRetention


def streak(logs: list[MutableMapping[str, Any]]) -> list[tuple[str, str, bool, int | None]]:
    return [(e["event"], e["log_level"], "exc_info" in e, e.get("failures")) for e in logs]


def expected(failed: str, recovered: str) -> list[tuple[str, str, bool, int | None]]:
    return [
        (failed, "error", True, None),
        (failed, "warning", False, 2),
        (failed, "warning", False, 3),
        (recovered, "warning", False, 3),
    ]


@pytest.fixture
def wal_database(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "wal.db")
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    yield path
    db.close()


async def test_a_failing_wal_checkpoint_logs_one_traceback(
    tmp_path: Path, wal_database: str
) -> None:
    checkpointer = WalCheckpointer(str(tmp_path))  # a directory: SQLite cannot open it
    with capture_logs() as logs:
        for _ in range(3):
            await checkpointer.round()
        checkpointer.path = wal_database
        await checkpointer.round()
        await checkpointer.round()  # no second "recovered" line
    await checkpointer.stop()
    assert streak(logs) == expected("wal_checkpoint_failed", "wal_checkpoint_recovered")
    assert "OperationalError" in logs[1]["error"]


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    upgrade(Settings(data_dir=tmp_path))  # outside the test's event loop: alembic runs its own
    return tmp_path / "apiforge.db"


async def test_a_failing_answer_log_upkeep_logs_one_traceback(migrated: Path) -> None:
    answers = AnswerLog.beside(str(migrated), retention_seconds=86400)
    await answers.open()
    assert answers.owner

    def failing_disk(now_us: int | None = None) -> int:
        raise OSError(5, "Input/output error")

    try:
        with capture_logs() as logs:
            answers.sweep = failing_disk  # type: ignore[method-assign]
            for _ in range(3):
                await answers.upkeep_round(sweep=True)
            del answers.sweep  # the disk is back
            await answers.upkeep_round(sweep=True)
            await answers.upkeep_round(sweep=True)
    finally:
        await answers.close()
    assert streak(logs) == expected("answer_log_upkeep_failed", "answer_log_upkeep_recovered")
    assert "Input/output error" in logs[1]["error"]


async def test_a_failing_log_retention_logs_one_traceback(app: FastAPI, tmp_path: Path) -> None:
    broken = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # no request_logs table
    retention = LogRetention(broken, days=1)
    try:
        with capture_logs() as logs:
            for _ in range(3):
                await retention.round()
            retention.engine = app.state.engine  # the database is back
            await retention.round()
            await retention.round()
    finally:
        await broken.dispose()
    # Its two chores fail and recover apart: the revocations' pruning as well (no table either).
    for chore in ("log_retention", "revocation_pruning"):
        mine = [e for e in logs if str(e["event"]).startswith(chore)]
        assert streak(mine) == expected(f"{chore}_failed", f"{chore}_recovered")
        assert "OperationalError" in mine[1]["error"]
