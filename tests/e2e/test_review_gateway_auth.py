"""Review of who the gateway and the management API take a caller for: the client address behind
`APIFORGE_TRUSTED_PROXIES=["*"]` (a forged left-most `X-Forwarded-For` entry passed IP
allow-lists), both in the application and in the server stack `apiforge serve` runs, on both
backends."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import uvicorn
from httpx import ASGITransport, AsyncClient, Response
from typer.testing import CliRunner

from apiforge.app import create_app, shutdown
from apiforge.cli import app as cli
from apiforge.core.settings import Settings
from tests.e2e._keys import app_key, call, create_key, notes_app
from tests.e2e._workspaces import assert_error, data_of
from tests.e2e.test_gateway_keys import node
from tests.factories import User, register

PROXY = ("10.0.0.1", 4000)  # the one proxy in front of a server trusting every peer
ALLOWED = "203.0.113.0/24"
REAL = "198.51.100.7"  # the client as the proxy saw it (appended last), outside ALLOWED
FORGED = f"203.0.113.9, {REAL}"  # the client's own header, the proxy's entry after it


async def _limited_keys(client: AsyncClient) -> tuple[User, str, str, str]:
    """An owner, their app, an app key and a ws key both limited to `ALLOWED`."""
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, app_secret = await app_key(client, owner, app_id, allowedIps=[ALLOWED])
    _, ws_secret = await create_key(
        client, owner.headers, type="ws", role="editor", allowedIps=[ALLOWED]
    )
    return owner, app_id, app_secret, ws_secret


async def _refused_everywhere(
    http: AsyncClient, app_id: str, app_secret: str, ws_secret: str
) -> None:
    """A forged chain is 403 `ip_not_allowed` on both edges, and nothing is written."""
    forged = {"X-Forwarded-For": FORGED}
    added = await call(http, app_secret, app_id, "addNote", {"text": "forged"}, headers=forged)
    assert_error(added, 403, "ip_not_allowed")
    created = await http.post(
        "/api/v1/apps", json={"name": "Forged"}, headers={"X-Api-Key": ws_secret, **forged}
    )
    assert_error(created, 403, "ip_not_allowed")
    # The proxy's own entry is the client: an allowed one passes.
    allowed = {"X-Forwarded-For": f"{REAL}, 203.0.113.9"}
    data_of(await call(http, app_secret, app_id, "echo", {"text": "ok"}, headers=allowed))
    apps = data_of(await http.get("/api/v1/apps", headers={"X-Api-Key": ws_secret, **allowed}))
    assert [a["name"] for a in apps["list"]] == ["Notes"]
    notes = await call(http, app_secret, app_id, "listNotes", headers=allowed)
    assert data_of(notes)["notes"]["list"] == []


async def test_a_forged_forwarded_for_never_passes_an_allow_list_behind_a_trust_all_proxy(
    client: AsyncClient, settings: Settings
) -> None:
    _, app_id, app_secret, ws_secret = await _limited_keys(client)
    trust_all = settings.model_copy(update={"trusted_proxies": ["*"]})
    async with node(trust_all, PROXY) as proxied:
        await _refused_everywhere(proxied, app_id, app_secret, ws_secret)


@asynccontextmanager
async def _served(settings: Settings, env: dict[str, str | None]) -> AsyncIterator[AsyncClient]:
    """The application wrapped as `apiforge serve` has uvicorn wrap it (its own middleware,
    from the options `serve` passes), reached from `PROXY`."""
    options: list[dict[str, Any]] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(uvicorn, "run", lambda *_a, **kw: options.append(kw))
        # In a thread: `serve` runs its own event loop (the migration check).
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["serve"], env=env)
    assert result.exit_code == 0, result.output
    [given] = options
    application = create_app(settings)
    config = uvicorn.Config(
        application,
        proxy_headers=given["proxy_headers"],
        forwarded_allow_ips=given["forwarded_allow_ips"],
    )
    config.load()
    transport = ASGITransport(app=config.loaded_app, raise_app_exceptions=False, client=PROXY)
    try:
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http
    finally:
        await shutdown(application)


async def test_the_served_stack_trusting_every_proxy_refuses_a_forged_forwarded_for(
    client: AsyncClient, settings: Settings
) -> None:
    _, app_id, app_secret, ws_secret = await _limited_keys(client)
    trust_all = settings.model_copy(update={"trusted_proxies": ["*"]})
    env: dict[str, str | None] = {
        "APIFORGE_DATA_DIR": str(settings.data_dir),
        "APIFORGE_DATABASE_URL": settings.database_url,
        "APIFORGE_REDIS_URL": settings.redis_url,
        "APIFORGE_SECRET_KEY": settings.secret_key,
        "APIFORGE_TRUSTED_PROXIES": '["*"]',
        "APIFORGE_HOST": None,
        "APIFORGE_PORT": None,
    }
    async with _served(trust_all, env) as served:
        await _refused_everywhere(served, app_id, app_secret, ws_secret)


async def test_the_served_stack_behind_listed_proxies_reads_the_client_as_before(
    client: AsyncClient, settings: Settings
) -> None:
    _, app_id, app_secret, _ = await _limited_keys(client)
    listed = settings.model_copy(update={"trusted_proxies": ["10.0.0.0/8"]})
    env: dict[str, str | None] = {
        "APIFORGE_DATA_DIR": str(settings.data_dir),
        "APIFORGE_DATABASE_URL": settings.database_url,
        "APIFORGE_REDIS_URL": settings.redis_url,
        "APIFORGE_SECRET_KEY": settings.secret_key,
        "APIFORGE_TRUSTED_PROXIES": '["10.0.0.0/8"]',
        "APIFORGE_HOST": None,
        "APIFORGE_PORT": None,
    }

    async def via(forwarded: str) -> Response:
        headers = {"X-Forwarded-For": forwarded}
        return await call(served, app_secret, app_id, "echo", {"text": "x"}, headers=headers)

    async with _served(listed, env) as served:
        data_of(await via("203.0.113.9, 10.0.0.7"))  # a second listed proxy in between
        assert_error(await via(FORGED), 403, "ip_not_allowed")
        assert_error(await via("203.0.113.9, unknown"), 403, "ip_not_allowed")
