"""`LastUsedTracker` while the database is down: one traceback per outage, a one-line warning
for each later failed flush, and a line when a flush succeeds again."""

from pathlib import Path

from fastapi import FastAPI
from httpx import AsyncClient
from structlog.testing import capture_logs

from apiforge.core.db import make_engine
from apiforge.keys.lastused import LastUsedTracker
from tests.e2e._keys import app_key, notes_app
from tests.factories import register


async def test_a_streak_of_failed_flushes_logs_one_traceback(
    app: FastAPI, client: AsyncClient, tmp_path: Path
) -> None:
    owner = await register(client)
    key_id, _secret = await app_key(client, owner, await notes_app(client, owner, publish=False))
    broken = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # no api_keys table
    tracker = LastUsedTracker(broken, interval=3600)
    tracker.touch(key_id)
    with capture_logs() as logs:
        for _ in range(3):
            assert await tracker.flush() == 0
        tracker.engine = app.state.engine  # the database is back
        assert await tracker.flush() == 1
        assert await tracker.flush() == 0  # nothing left: no second "recovered" line
    events = [(e["event"], e["log_level"], "exc_info" in e, e.get("failures")) for e in logs]
    assert events == [
        ("last_used_flush_failed", "error", True, None),
        ("last_used_flush_failed", "warning", False, 2),
        ("last_used_flush_failed", "warning", False, 3),
        ("last_used_flush_recovered", "warning", False, 3),
    ]
    assert "OperationalError" in logs[1]["error"]
    with capture_logs() as logs:  # a new outage: a traceback again
        tracker.engine = broken
        tracker.touch(key_id)
        assert await tracker.flush() == 0
    assert [(e["event"], "exc_info" in e) for e in logs] == [("last_used_flush_failed", True)]
    tracker.engine = app.state.engine
    await tracker.close()
    await broken.dispose()
