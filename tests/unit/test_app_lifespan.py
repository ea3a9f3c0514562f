"""The app's lifespan keeps the start-up heap out of the collector while it serves."""

import gc

from apiforge.app import create_app
from apiforge.core.settings import Settings


async def test_the_startup_heap_is_frozen_while_serving(settings: Settings) -> None:
    app = create_app(settings)
    assert gc.get_freeze_count() == 0
    async with app.router.lifespan_context(app):
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
