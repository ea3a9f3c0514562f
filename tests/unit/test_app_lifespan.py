"""The app's lifespan keeps the start-up heap out of the collector while it serves."""

import gc

import pytest

from apiforge import app as app_module
from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings


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
