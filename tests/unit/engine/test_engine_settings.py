"""Operator settings reach the engine's collaborators."""

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings


async def test_http_allow_hosts_setting_reaches_the_http_step(settings: Settings) -> None:
    allowed = settings.model_copy(update={"http_allow_hosts": ["10.1.2.0/24", "intranet.local"]})
    app = create_app(allowed)
    try:
        hosts = app.state.engine_state.services.http_allow_hosts
        assert hosts == frozenset({"10.1.2.0/24", "intranet.local"})
    finally:
        await shutdown(app)


async def test_no_private_host_is_allowed_by_default(settings: Settings) -> None:
    app = create_app(settings)
    try:
        assert app.state.engine_state.services.http_allow_hosts == frozenset()
    finally:
        await shutdown(app)
