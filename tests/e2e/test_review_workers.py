"""Two server processes over one database (and Redis), shared by this module's tests: what
`tests/e2e/test_review_two_nodes.py` leaves out. An idempotency key sent to both nodes at once runs
its `httpRequest` step once (the claim must be seen before the steps run, not only at commit),
and a password change, a disabled subscription and a narrowed key allow-list made on one node
stop the other within their documented window (docs/decisions.md: sessions at once, keys and
subscriptions within a second)."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from httpx import AsyncClient, Response

from apiforge.core.settings import Settings
from tests._servers import running_servers
from tests.conftest import DATABASE_URL, fresh_settings
from tests.e2e._keys import app_key, call, subscribe
from tests.e2e._traffic import limited_app, slow_upstream
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import PASSWORD, register

KEY_WINDOW = 1.0 + 0.1  # keys and subscriptions: 1 s (+ slack)
GIVE_UP = 20.0  # seconds of polling after which a node is taken to honour it forever
KEY = "Idempotency-Key"

Probe = Callable[[], Awaitable[Response]]
Nodes = tuple[AsyncClient, AsyncClient]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def module_settings(
    template_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """One database for the module's pair of servers, whose `httpRequest` steps may call the
    test's upstream on 127.0.0.1."""
    directory: Path = tmp_path_factory.mktemp("workers")
    for settings in fresh_settings(template_database, directory):
        yield settings.model_copy(update={"http_allow_hosts": ["127.0.0.1"]})


@pytest.fixture(scope="module")
async def nodes(module_settings: Settings) -> AsyncIterator[Nodes]:
    async with (
        running_servers(module_settings) as urls,
        AsyncClient(base_url=urls[0], timeout=30) as one,
        AsyncClient(base_url=urls[1], timeout=30) as two,
    ):
        yield one, two


async def _honoured_for(probe: Probe, change: Callable[[], Awaitable[object]]) -> Response:
    """Warm the probed node past half its caches' TTL, make the change elsewhere, and poll until
    the probe is refused: the refusal, checked not to come later than `KEY_WINDOW` (measured as
    when the last accepted probe was sent, so a slow answer cannot inflate it)."""
    deadline = time.monotonic() + 0.7
    while time.monotonic() < deadline:
        data_of(await probe())
        await asyncio.sleep(0.05)
    await change()
    changed_at, honoured = time.monotonic(), 0.0
    while True:
        sent = time.monotonic() - changed_at
        response = await probe()
        if response.status_code != 200:
            assert honoured <= KEY_WINDOW, f"honoured {honoured:.2f}s after the change"
            return response
        honoured = sent
        assert honoured <= GIVE_UP, f"still honoured {honoured:.1f}s after the change"
        await asyncio.sleep(0.05)


@pytest.mark.skipif(
    not DATABASE_URL, reason="the embedded database is served by one process (`serve --workers`)"
)
async def test_one_key_sent_to_both_nodes_runs_its_upstream_request_once(nodes: Nodes) -> None:
    """Every duplicate is refused while the first call waits on its upstream, so none of them
    can be waiting there too (they would never answer with the gate closed); on the embedded
    database a second process claimed the key only when its answer was written, and the
    upstream was called once per process."""
    one, two = nodes
    owner, consumer = await register(one), await register(one)
    async with slow_upstream() as upstream:
        upstream.gate = asyncio.Event()
        app_id, _ = await limited_app(one, owner, upstream.url, visibility="public")
        _, secret = await app_key(one, consumer, app_id)
        first = asyncio.create_task(call(one, secret, app_id, "slow", headers={KEY: "pay"}))
        await upstream.wait_in_flight(1)
        duplicates = [
            asyncio.create_task(call(node, secret, app_id, "slow", headers={KEY: "pay"}))
            for node in (one, two) * 4
        ]
        done, pending = await asyncio.wait(duplicates, timeout=15)
        assert not pending, "a duplicate is running the call's steps"
        for task in done:
            assert_error(task.result(), 409, "idempotency_key_in_use")
        assert upstream.in_flight == 1
        upstream.gate.set()
        answer = await first
        data_of(answer)
        for node in (one, two):
            replay = await call(node, secret, app_id, "slow", headers={KEY: "pay"})
            assert replay.headers["Idempotent-Replayed"] == "1"
            assert replay.content == answer.content
        assert upstream.served == 1


async def test_password_change_ends_the_other_sessions_on_the_other_node_at_once(
    nodes: Nodes,
) -> None:
    one, two = nodes
    user = await register(one)
    app_id = data_of(await one.post("/api/v1/apps", json={"name": "P"}, headers=user.headers))["id"]
    login = {"email": user.email, "password": PASSWORD}
    other = data_of(await two.post("/api/v1/auth/login", json=login))["accessToken"]
    elsewhere = {"Authorization": f"Bearer {other}"}
    dev = {"appId": app_id, "api": "none", "version": "dev", "args": {}}
    data_of(await two.get("/api/v1/apps", headers=elsewhere))
    body = {"currentPassword": PASSWORD, "newPassword": "a brand new passphrase"}
    data_of(await one.post("/api/v1/user/password", json=body, headers=user.headers))
    assert_error(await two.get("/api/v1/apps", headers=elsewhere), 401, "session_revoked")
    gateway = await two.post("/api/v1/invocations", json=dev, headers=elsewhere)
    assert_error(gateway, 401, "session_revoked")
    data_of(await two.get("/api/v1/apps", headers=user.headers))  # the changing session stays
    assert (await two.post("/api/v1/auth/login", json=login)).status_code == 401


async def test_a_disabled_subscription_and_a_narrowed_key_stop_the_other_node(
    nodes: Nodes,
) -> None:
    one, two = nodes
    owner, disabled, narrowed = await register(one), await register(one), await register(one)
    async with slow_upstream() as upstream:
        app_id, _ = await limited_app(one, owner, upstream.url, visibility="public")
    subscription_id = await subscribe(one, disabled.headers, app_id)
    _, disabled_key = await app_key(one, disabled, app_id)
    key_id, narrowed_key = await app_key(one, narrowed, app_id)

    async def disable() -> None:
        path = f"/api/v1/subscriptions/{subscription_id}"
        data_of(await one.patch(path, json={"enabled": False}, headers=disabled.headers))

    async def narrow() -> None:
        body = {"allowedIps": ["10.0.0.0/8"]}
        path = f"/api/v1/api-keys/{key_id}"
        data_of(await one.patch(path, json=body, headers=narrowed.headers))

    off, outside = await asyncio.gather(
        _honoured_for(lambda: call(two, disabled_key, app_id, "echo"), disable),
        _honoured_for(lambda: call(two, narrowed_key, app_id, "echo"), narrow),
    )
    assert_error(off, 403, "app_not_enabled")
    assert_error(outside, 403, "ip_not_allowed")
