"""`tests/_servers.py`: two real server processes share one database (and Redis when set) — a key
created through one answers calls through the other."""

from httpx import AsyncClient

from apiforge.core.settings import Settings
from tests._servers import running_servers
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import data_of
from tests.factories import register


async def test_two_processes_serve_the_same_platform(settings: Settings) -> None:
    async with (
        running_servers(settings, count=2) as urls,
        AsyncClient(base_url=urls[0], timeout=30) as first,
        AsyncClient(base_url=urls[1], timeout=30) as second,
    ):
        owner = await register(first)
        app_id = await notes_app(first, owner)
        _, secret = await app_key(first, owner, app_id)
        for client, text in ((first, "one"), (second, "two")):
            response = await call(client, secret, app_id, "echo", {"text": text})
            assert data_of(response) == {"echo": text}, response.text
        # The second process is a separate server of its own, ready on its own port.
        assert (await second.get("/readyz")).status_code == 200
