"""Redis unreachable (a closed port, for real): every limit follows its failure mode — frequency
open by default, concurrency as configured — never a 500, with a metric and one log line."""

from collections.abc import AsyncIterator

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from tests._servers import free_port
from tests.e2e._keys import call
from tests.e2e._traffic import limited_app, metric_value
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import PASSWORD, register


@pytest.fixture
async def dead_redis(settings: Settings) -> Settings:
    """The test's settings with Redis on a port nobody listens on."""
    return settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "redis_prefix": "dead:"}
    )


async def _client(settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    application = create_app(settings)
    transport = ASGITransport(app=application, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield application, http
    await shutdown(application)


async def test_limits_fail_open_by_default_while_redis_is_unreachable(
    dead_redis: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async for _, client in _client(dead_redis):
        owner = await register(client)
        before = (await client.get("/metrics")).text
        app_id, secret = await limited_app(
            client, owner, keyPerMinute=1, apis={"echo": {"concurrent": 1}}
        )
        for n in range(3):  # over the key limit of 1: nothing can count, so all pass
            response = await call(client, secret, app_id, "echo", {"text": str(n)})
            assert data_of(response) == {"echo": str(n)}
        # Sign-in's throttle cannot count failures either: sign-in still answers, never 500.
        wrong = {"email": owner.email, "password": "wrong password!"}
        for _ in range(3):
            assert (await client.post("/api/v1/auth/login", json=wrong)).status_code == 401
        right = {"email": owner.email, "password": PASSWORD}
        assert (await client.post("/api/v1/auth/login", json=right)).status_code == 200
        after = (await client.get("/metrics")).text
        for kind in ("frequency", "concurrency", "key_creation", "login"):
            name = "apiforge_limit_degraded_total"
            grown = metric_value(after, name, kind=kind, mode="open") - metric_value(
                before, name, kind=kind, mode="open"
            )
            assert grown >= 1, kind
    logged = capsys.readouterr().err
    assert logged.count('"event":"traffic store unavailable"') == 1  # once, not once per call


async def test_a_limit_configured_to_fail_closed_answers_503(dead_redis: Settings) -> None:
    closed = dead_redis.model_copy(update={"traffic_concurrency_failure": "closed"})
    async for _, client in _client(closed):
        owner = await register(client)
        app_id, secret = await limited_app(client, owner)
        for _ in range(3):
            response = await call(client, secret, app_id, "echo")
            data = assert_error(response, 503, "limits_unavailable")
            assert data["limit"] == "concurrency"
            assert response.headers["Retry-After"] == "1"


async def test_anti_duplicate_tokens_fail_closed_with_a_retry_and_a_metric(
    dead_redis: Settings,
) -> None:
    """Tokens live in Redis when it is configured: unreachable, nobody can tell a first use
    from a second, so issuing and spending answer 503 (with `Retry-After`), never a 500 or a
    run, and the degraded metric counts them as closed."""
    async for _, client in _client(dead_redis):
        owner = await register(client)
        before = (await client.get("/metrics")).text
        issued = await client.get("/api/v1/idempotency-tokens", headers=owner.headers)
        assert_error(issued, 503, "idempotency_unavailable")
        assert issued.headers["Retry-After"] == "1"
        token = "t" * 43
        spent = await client.post(
            "/api/v1/apps",
            json={"name": "Shop"},
            headers={**owner.headers, "X-Idempotency-Token": token},
        )
        assert_error(spent, 503, "idempotency_unavailable")
        assert spent.headers["Retry-After"] == "1"
        apps = data_of(await client.get("/api/v1/apps", headers=owner.headers))
        assert apps["totalCount"] == 0
        after = (await client.get("/metrics")).text
        name, labels = "apiforge_limit_degraded_total", {"kind": "idempotency_token"}
        grown = metric_value(after, name, **labels, mode="closed") - metric_value(
            before, name, **labels, mode="closed"
        )
        assert grown == 2
