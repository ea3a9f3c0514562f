"""The app's lifespan keeps the start-up heap out of the collector while it serves, and sweeps
the files directory of what killed processes left behind."""

import asyncio
import gc
import os
import time

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apiforge import app as app_module
from apiforge.app import create_app, shutdown
from apiforge.core.db import dispose_engine
from apiforge.core.settings import Settings
from apiforge.files.storage import DELETED, INCOMING, STALE_PART_SECONDS
from apiforge.traffic.rules import CACHE_SECONDS, NO_APP_LIMITS, AppLimits
from apiforge.usage.retention import LogRetention


async def test_the_startup_heap_is_frozen_while_serving(settings: Settings) -> None:
    app = create_app(settings)
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


async def test_a_failing_shutdown_step_skips_none_of_the_later_ones(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The charges' writer failing to close (a full disk) must not lose the quota hits and
    last-used times still in memory, which later steps write: every step runs, then the first
    failure is raised."""
    app = create_app(settings)

    async def broken(_state: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(app_module, "close_charger", broken)
    closed: list[str] = []

    async def close_keys() -> None:
        closed.append("keys")

    async def close_traffic() -> None:
        closed.append("traffic")

    app.state.keys.close = close_keys
    app.state.traffic.close = close_traffic
    with pytest.raises(OSError, match="No space left"):
        await shutdown(app)
    assert closed == ["keys", "traffic"]


async def test_a_failing_background_stop_skips_none_of_the_shutdown_steps(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log retention's stop ran before `shutdown` unguarded: its failure skipped every
    flush (request logs, charges, nonces) and left the start-up heap frozen. Now the flushes
    run, the collector is back, then the failure is raised."""
    app = create_app(settings)

    async def broken(_self: object) -> None:
        raise RuntimeError("retention stop failed")

    drained: list[object] = []

    async def drain(state: object) -> None:
        drained.append(state)

    monkeypatch.setattr(LogRetention, "stop", broken)
    monkeypatch.setattr(app_module, "drain_request_logs", drain)
    with pytest.raises(RuntimeError, match="retention stop failed"):
        async with app.router.lifespan_context(app):
            pass
    assert drained == [app.state.gateway_state]
    assert gc.get_freeze_count() == 0


async def test_the_files_left_by_a_killed_process_are_swept_at_start_up(
    settings: Settings,
) -> None:
    """An upload cut by a crash and a deleted workspace's bytes whose removal a crash stopped
    used to stay on disk for good; an upload written to lately may be another process's."""
    root = settings.resolved_files_dir
    (root / INCOMING).mkdir(parents=True)
    dead, live = root / INCOMING / "dead.part", root / INCOMING / "live.part"
    for part in (dead, live):
        part.write_bytes(b"partial")
    old = time.time() - STALE_PART_SECONDS - 60
    os.utime(dead, (old, old))
    half_removed = root / DELETED / "c0ffee" / "ab"
    half_removed.mkdir(parents=True)
    (half_removed / "bytes").write_bytes(b"x")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pass  # the sweep runs in the background; the lifespan's end waits for it
    assert not dead.exists()
    assert live.exists()
    assert list((root / DELETED).iterdir()) == []


async def test_the_limit_rules_stop_reading_before_the_engine_is_disposed(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The traffic limits' cache re-reads the rules on a connection of the engine's, as the key
    and target caches do, yet was stopped only after the engine: a re-read still running (a
    slow database) held the dispose for its whole grace and then had its connection closed
    under it. It stops with the other caches now; the Redis releases still close after the
    engine, whose grace lets the calls still running end and queue theirs."""
    app = create_app(settings)
    apps = app.state.traffic.rules.apps
    now = [0.0]
    apps.clock = lambda: now[0]
    apps.put("app-x", NO_APP_LIMITS)
    now[0] = CACHE_SECONDS * 0.75  # old enough for a call to start a re-read
    reading = asyncio.Event()

    async def hung_read(_conn: AsyncConnection, _app_id: str) -> AppLimits:
        reading.set()
        await asyncio.Event().wait()  # a database that does not answer
        return NO_APP_LIMITS

    apps.load = hung_read
    async with app.state.engine.connect() as conn:
        await app.state.traffic.rules.app(conn, "app-x")
    await reading.wait()
    still_reading: list[int] = []
    dispose = dispose_engine

    async def observed(engine: AsyncEngine, grace: float = 2.0) -> None:
        still_reading.append(len(apps._tasks))
        await dispose(engine, grace)

    monkeypatch.setattr(app_module, "dispose_engine", observed)
    await shutdown(app)
    assert still_reading == [0]
