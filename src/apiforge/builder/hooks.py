"""How builder changes reach this process's gateway caches."""

from collections.abc import Callable

from fastapi import Request

from apiforge.engine.loader import ApiLoader


def app_changed_hook(request: Request) -> Callable[[str], None]:
    """Forget an app in the gateway's resolve cache (`ApiLoader.forget_app`); services call it
    after their commit, so this node sees an env change, a publish or a deprecation at once."""
    loader: ApiLoader = request.app.state.engine_state.loader
    return loader.forget_app
