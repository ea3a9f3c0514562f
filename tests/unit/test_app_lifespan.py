"""The app's lifespan keeps the start-up heap out of the collector while it serves, and sweeps
the files directory of what killed processes left behind."""

import gc
import os
import time

import pytest

from apiforge import app as app_module
from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.files.storage import DELETED, INCOMING, STALE_PART_SECONDS
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
