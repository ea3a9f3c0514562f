"""Redis connections dropped (`CLIENT KILL` of this test's own clients) or stalled (Redis
accepts and then answers nothing) under a running app: every limit follows its failure mode
within a bounded time (frequency and concurrency open; anti-duplicate tokens closed, 503), and
the app recovers on its own. The app reaches Redis through a TCP proxy of the test's own
(tests/e2e/_proxy.py), so only its connections are killed or stalled."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from httpx import AsyncClient, Response

from apiforge.core.settings import Settings
from tests.conftest import REDIS_URL
from tests.e2e._keys import call
from tests.e2e._proxy import TcpProxy
from tests.e2e._traffic import limited_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import PASSWORD, User, app_client, register

pytestmark = pytest.mark.skipif(not REDIS_URL, reason="Redis only")

# A call may wait out a few socket timeouts (1 s each) before its failure mode applies; far
# more than that is a hang.
BOUND_SECONDS = 20.0


@pytest.fixture
async def proxy() -> AsyncIterator[TcpProxy]:
    target = urlsplit(REDIS_URL)
    server = TcpProxy(target.hostname or "127.0.0.1", target.port or 6379)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _through(settings: Settings, proxy: TcpProxy) -> Settings:
    """`settings` with Redis reached through `proxy` (same server, same database number)."""
    url = f"redis://127.0.0.1:{proxy.listening}{urlsplit(REDIS_URL).path or '/0'}"
    return settings.model_copy(update={"redis_url": url})


async def _bounded(request: Awaitable[Response]) -> Response:
    """`request`'s answer, failing the test when it has not come within `BOUND_SECONDS`."""
    return await asyncio.wait_for(request, BOUND_SECONDS)


async def _each_mode_holds(client: AsyncClient, owner: User, app_id: str, secret: str) -> None:
    """Frequency and concurrency fail open (the call runs); tokens fail closed; sign-in works."""
    for text in ("a", "b"):
        response = await _bounded(call(client, secret, app_id, "echo", {"text": text}))
        assert data_of(response) == {"echo": text}
    issued = await _bounded(client.get("/api/v1/idempotency-tokens", headers=owner.headers))
    assert_error(issued, 503, "idempotency_unavailable")
    login = {"email": owner.email, "password": PASSWORD}
    data_of(await _bounded(client.post("/api/v1/auth/login", json=login)))


async def _recovers(client: AsyncClient, owner: User) -> None:
    """Tokens are issued again (Redis answers), within a few retry pauses."""
    deadline = time.monotonic() + BOUND_SECONDS
    while True:
        issued = await client.get("/api/v1/idempotency-tokens", headers=owner.headers)
        if issued.status_code == 200:
            return
        assert_error(issued, 503, "idempotency_unavailable")
        assert time.monotonic() < deadline, "no recovery"
        await asyncio.sleep(0.2)


async def _serving(client: AsyncClient) -> tuple[User, str, str]:
    """An owner, a limited app and its key, a call and an anti-duplicate token served first
    (connections to Redis open)."""
    owner = await register(client)
    app_id, secret = await limited_app(client, owner, keyPerMinute=100)
    data_of(await call(client, secret, app_id, "echo"))
    data_of(await client.get("/api/v1/idempotency-tokens", headers=owner.headers))
    return owner, app_id, secret


async def test_killed_redis_connections_follow_each_mode_and_recover(
    settings: Settings, proxy: TcpProxy
) -> None:
    async with app_client(_through(settings, proxy)) as (_, client):
        owner, app_id, secret = await _serving(client)
        killer = aioredis.Redis.from_url(REDIS_URL)
        try:
            for _ in range(3):  # each time, every connection the app holds goes
                addresses = proxy.upstream_addresses()
                assert addresses
                for address in addresses:
                    assert await killer.client_kill_filter(_id=None, addr=address) == 1
                data_of(await _bounded(call(client, secret, app_id, "echo")))
                await _recovers(client, owner)
        finally:
            await killer.aclose()


async def test_a_stalled_redis_costs_bounded_time_and_recovers(
    settings: Settings, proxy: TcpProxy
) -> None:
    async with app_client(_through(settings, proxy)) as (_, client):
        owner, app_id, secret = await _serving(client)
        proxy.stall()
        await _each_mode_holds(client, owner, app_id, secret)
        proxy.resume()
        await _recovers(client, owner)
        data_of(await call(client, secret, app_id, "echo"))
