"""The gateway's own edge: served in front of the management middleware stack, it keeps the
conventions that stack gives every other route — request id, body limit, method override,
opaque 500s, metrics — and writes an access line for 5xx answers (every call only when
`APIFORGE_GATEWAY_ACCESS_LOG` is on; the request log records them all)."""

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.gateway.stages.request import RequestStage
from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register


async def _hello(client: AsyncClient) -> tuple[dict[str, str], dict[str, Any]]:
    user = await register(client)
    headers = user.headers
    app_id = await new_app(client, headers)
    await new_api(client, headers, app_id, "hello", steps=[set_step("greeting", "hi")])
    return headers, {"appId": app_id, "api": "hello", "version": "dev", "args": {}}


async def test_request_ids_are_echoed_or_minted(client: AsyncClient) -> None:
    headers, call = await _hello(client)
    given = {**headers, "X-Request-ID": "client-chosen-id-123"}
    answered = await client.post("/api/v1/invocations", json=call, headers=given)
    assert data_of(answered) == {"greeting": "hi"}
    assert answered.headers["x-request-id"] == "client-chosen-id-123"
    for bad in ("short", "has spaces in it", "x" * 200, "<script>alert(1)</script>"):
        minted = await client.post(
            "/api/v1/invocations", json=call, headers={**headers, "X-Request-ID": bad}
        )
        assert minted.status_code == 200
        assert len(minted.headers["x-request-id"]) == 26
    refused = await client.post("/api/v1/invocations", json=call)
    assert refused.status_code == 401
    assert len(refused.headers["x-request-id"]) == 26


async def test_bodies_over_the_limit_are_413(client: AsyncClient, settings: Settings) -> None:
    headers, call = await _hello(client)
    big = b'{"appId": "' + b"x" * settings.max_body_bytes + b'"}'
    declared = await client.post(
        "/api/v1/invocations", content=big, headers={**headers, "Content-Type": "application/json"}
    )
    assert_error(declared, 413, "payload_too_large")

    async def stream() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(settings.max_body_bytes // 65536 + 2):
            yield b" " * 65536

    streamed = await client.post("/api/v1/invocations", content=stream(), headers=headers)
    assert_error(streamed, 413, "payload_too_large")
    assert data_of(await client.post("/api/v1/invocations", json=call, headers=headers))


async def test_other_methods_and_overrides_are_405(client: AsyncClient) -> None:
    headers, call = await _hello(client)
    got = await client.get("/api/v1/invocations", headers=headers)
    assert_error(got, 405, "method_not_allowed")
    override = {**headers, "X-HTTP-Method-Override": "DELETE"}
    refused = await client.post("/api/v1/invocations", json=call, headers=override)
    assert_error(refused, 405, "method_not_allowed")


async def test_unexpected_errors_are_opaque_500s_with_a_log_line(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    headers, call = await _hello(client)

    async def broken(self: RequestStage, ctx: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(RequestStage, "on_request", broken)
    answered = await client.post("/api/v1/invocations", json=call, headers=headers)
    assert_error(answered, 500, "internal_error")
    assert "secret internals" not in answered.text
    request_id = answered.headers["x-request-id"]
    logged = capsys.readouterr().err
    assert "unhandled_error" in logged
    assert request_id in logged
    metrics = (await client.get("/metrics")).text
    assert 'route="/api/v1/invocations",status="500"' in metrics


@pytest.mark.parametrize("enabled", [False, True])
async def test_access_lines_for_every_call_only_when_enabled(
    settings: Settings, capsys: pytest.CaptureFixture[str], enabled: bool
) -> None:
    configured = settings.model_copy(update={"gateway_access_log": enabled, "log_level": "INFO"})
    app: FastAPI = create_app(configured)
    try:
        transport = ASGITransport(app=app, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as client:
            headers, call = await _hello(client)
            capsys.readouterr()
            answered = await client.post("/api/v1/invocations", json=call, headers=headers)
            assert answered.status_code == 200
            lines = [
                line
                for line in capsys.readouterr().err.splitlines()
                if '"route":"/api/v1/invocations"' in line
            ]
            assert len(lines) == (1 if enabled else 0)
            if enabled:
                assert answered.headers["x-request-id"] in lines[0]
                assert '"status":200' in lines[0]
    finally:
        await shutdown(app)
