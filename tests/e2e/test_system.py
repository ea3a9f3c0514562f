"""System endpoints over HTTP (/api/v1/version, /healthz, /readyz, /metrics), the JSON log lines
a request produces, and `apiforge serve` as a real process."""

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx import AsyncClient

import apiforge
from apiforge.core.settings import Settings
from tests.factories import app_client, register

NOTES = """\
# Changelog

## [Unreleased]
- Not yet.

## [9.1.0] - 2030-02-01
### Added
- Everything, with a <script>alert(1)</script> in the notes.

## [9.0.0] - 2030-01-01
### Fixed
- '; DROP TABLE accounts; --
"""


@asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[AsyncClient]:
    async with app_client(settings) as (_application, http):
        yield http


@pytest.fixture
async def settle_sqlite_threads() -> AsyncIterator[None]:
    """aiosqlite stops the worker thread of a connection that failed to open without waiting for
    it; join such threads while the event loop is still open, or their late callback hits a
    closed loop and pytest reports it against a later test."""
    before = set(threading.enumerate())
    yield
    for thread in set(threading.enumerate()) - before:
        if "_connection_worker_thread" in thread.name:
            await asyncio.to_thread(thread.join, 5)


def _metric(text: str, name: str, labels: dict[str, str]) -> float:
    rendered = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(rendered)}\}} (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_version_reports_running_version_and_release_notes(client: AsyncClient) -> None:
    response = await client.get("/api/v1/version")
    assert response.status_code == 200
    body = response.json()
    assert body["code"] == 200
    assert body["message"] == "success"
    data = body["data"]
    assert set(data) == {
        "version",
        "latestVersion",
        "releaseDate",
        "updateAvailable",
        "releaseList",
    }
    assert data["version"] == apiforge.__version__
    assert data["updateAvailable"] in (0, 1)
    assert data["releaseList"][0]["version"] == data["latestVersion"]
    assert data["releaseList"][0]["date"] == data["releaseDate"]
    assert apiforge.__version__ in [release["version"] for release in data["releaseList"]]


async def test_version_from_configured_changelog(settings: Settings, tmp_path: Path) -> None:
    notes = tmp_path / "CHANGELOG.md"
    notes.write_text(NOTES)
    async with client_for(settings.model_copy(update={"changelog_path": notes})) as http:
        # A public endpoint: a bogus credential is neither needed nor an error.
        response = await http.get(
            "/api/v1/version?x=%3Cscript%3E", headers={"Authorization": "Bearer nonsense"}
        )
    assert response.status_code == 200
    assert response.json()["data"] == {
        "version": apiforge.__version__,
        "latestVersion": "9.1.0",
        "releaseDate": "2030-02-01",
        "updateAvailable": 1,
        "releaseList": [
            {
                "version": "9.1.0",
                "date": "2030-02-01",
                "yanked": 0,
                "changes": {
                    "added": ["Everything, with a <script>alert(1)</script> in the notes."]
                },
            },
            {
                "version": "9.0.0",
                "date": "2030-01-01",
                "yanked": 0,
                "changes": {"fixed": ["'; DROP TABLE accounts; --"]},
            },
        ],
    }


async def test_version_without_changelog_is_empty_not_an_error(
    settings: Settings, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "CHANGELOG.md"
    async with client_for(settings.model_copy(update={"changelog_path": missing})) as http:
        response = await http.get("/api/v1/version")
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["latestVersion"] is None
    assert data["releaseList"] == []
    assert data["updateAvailable"] == 0


async def test_healthz_is_ok_without_touching_dependencies(
    settings: Settings, tmp_path: Path
) -> None:
    broken = settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}"}
    )
    async with client_for(broken) as http:
        response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"code": 200, "message": "success", "data": {"status": "ok"}}
    assert response.headers["X-Request-ID"]


async def test_readyz_checks_database_and_redis(client: AsyncClient, settings: Settings) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["data"] == {
        "status": "ready",
        "checks": {"database": "ok", "redis": "ok" if settings.redis_url else "disabled"},
    }


@pytest.mark.usefixtures("settle_sqlite_threads")
async def test_readyz_503_names_an_unreachable_database(settings: Settings, tmp_path: Path) -> None:
    broken = settings.model_copy(
        update={"database_url": f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'x.db'}"}
    )
    async with client_for(broken) as http:
        response = await http.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == 503
    assert body["message"] == "Not ready: database"
    assert body["data"]["error"] == "not_ready"
    assert body["data"]["checks"]["database"] == "failed"
    assert str(tmp_path) not in response.text  # failure details stay in the server log


async def test_readyz_503_names_an_unreachable_redis(settings: Settings) -> None:
    async with client_for(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})) as h:
        response = await h.get("/readyz")
    assert response.status_code == 503
    assert response.json()["data"] == {
        "error": "not_ready",
        "checks": {"database": "ok", "redis": "failed"},
    }


async def test_health_probes_answer_head_too(client: AsyncClient, settings: Settings) -> None:
    """Load balancers often probe with HEAD: the same status, no body."""
    assert (await client.head("/healthz")).status_code == 200
    assert (await client.head("/readyz")).status_code == 200
    async with client_for(settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})) as h:
        response = await h.head("/readyz")
    assert response.status_code == 503
    assert response.content == b""
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert set(paths["/healthz"]) == set(paths["/readyz"]) == {"get"}


async def test_every_get_route_answers_head_with_its_headers_and_no_body(
    client: AsyncClient,
) -> None:
    """RFC 9110: HEAD is GET without the body, errors included; other methods stay 405."""
    from tests.factories import register

    user = await register(client)
    got = await client.get("/api/v1/user/profile", headers=user.headers)
    head = await client.head("/api/v1/user/profile", headers=user.headers)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == got.headers["content-length"] != "0"
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["etag"] == got.headers["etag"]
    assert head.headers["x-request-id"]
    refused = await client.head("/api/v1/user/profile")
    assert (refused.status_code, refused.content) == (401, b"")
    assert int(refused.headers["content-length"]) > 0
    # A POST-only route is still 405 for HEAD, as for GET.
    assert (await client.head("/api/v1/auth/login")).status_code == 405
    assert (await client.get("/api/v1/auth/login")).status_code == 405


async def test_metrics_exposes_request_counters_outside_the_envelope(client: AsyncClient) -> None:
    labels = {"method": "GET", "route": "/healthz", "status": "200"}
    before = _metric((await client.get("/metrics")).text, "apiforge_http_requests_total", labels)
    assert (await client.get("/healthz")).status_code == 200
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert not response.text.startswith("{")
    assert "# TYPE apiforge_http_requests_total counter" in response.text
    assert _metric(response.text, "apiforge_http_requests_total", labels) == before + 1
    assert "apiforge_http_request_seconds_bucket" in response.text


async def test_answers_of_idempotency_keys_are_counted_under_their_route(
    client: AsyncClient,
) -> None:
    """A management replay, a 422 and a 400 are answered before the router runs: they are
    counted under the route's template all the same (deliverable: latency by route template)."""
    user = await register(client)

    def counts(text: str) -> list[float]:
        return [
            _metric(text, "apiforge_http_requests_total", {**route, "status": status})
            for status in ("200", "422", "400")
        ] + [_metric(text, "apiforge_http_requests_total", {**unmatched, "status": "200"})]

    route = {"method": "POST", "route": "/api/v1/apps"}
    unmatched = {"method": "POST", "route": "unmatched"}
    before = counts((await client.get("/metrics")).text)
    for name, key in (("X", "a"), ("X", "a"), ("Y", "a"), ("Y", "a b")):
        await client.post(
            "/api/v1/apps", json={"name": name}, headers={**user.headers, "Idempotency-Key": key}
        )
    after = counts((await client.get("/metrics")).text)
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1, 0]


@pytest.mark.parametrize("path", ["/api/v1/version", "/healthz", "/readyz", "/metrics"])
async def test_system_endpoints_refuse_other_methods(client: AsyncClient, path: str) -> None:
    response = await client.post(path, json={"'; DROP TABLE accounts; --": "<script>"})
    assert response.status_code == 405
    assert response.json()["data"]["error"] == "method_not_allowed"
    override = await client.post(path, headers={"X-HTTP-Method-Override": "DELETE"})
    assert override.status_code == 405


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_access_log_line_is_json_with_the_request_id(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async with client_for(settings.model_copy(update={"log_level": "INFO"})) as http:
        capsys.readouterr()
        given = await http.get("/healthz", headers={"X-Request-ID": "probe-0001-abcdef"})
        minted = await http.get("/api/v1/version")
    lines = _json_lines(capsys.readouterr().err)  # every line must parse as JSON
    access = [line for line in lines if line.get("event") == "request"]
    assert [(line["path"], line["request_id"]) for line in access] == [
        ("/healthz", "probe-0001-abcdef"),
        ("/api/v1/version", minted.headers["X-Request-ID"]),
    ]
    assert given.headers["X-Request-ID"] == "probe-0001-abcdef"
    assert access[0]["status"] == 200
    assert access[0]["level"] == "info"
    assert access[0]["timestamp"].endswith("Z")


async def test_stdlib_logging_is_rendered_as_json(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    async with client_for(settings.model_copy(update={"log_level": "INFO"})):
        capsys.readouterr()
        logging.getLogger("uvicorn.error").warning("listening on %s", "port 1")
    lines = _json_lines(capsys.readouterr().err)
    assert {
        "event": "listening on port 1",
        "level": "warning",
        "logger": "uvicorn.error",
    }.items() <= lines[-1].items()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _server_env(settings: Settings) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("APIFORGE_")}
    env.update(
        APIFORGE_DATA_DIR=str(settings.data_dir),
        APIFORGE_DATABASE_URL=settings.database_url,
        APIFORGE_REDIS_URL=settings.redis_url or "",
        APIFORGE_REDIS_PREFIX=settings.redis_prefix,
        APIFORGE_SECRET_KEY=settings.secret_key or "",
        APIFORGE_LOG_LEVEL="INFO",
    )
    return env


def test_serve_runs_the_app_with_one_json_access_line_per_request(settings: Settings) -> None:
    """The installed `apiforge serve`: uvicorn's own access log stays off, its lines are JSON."""
    port = _free_port()
    command = [str(Path(sys.executable).parent / "apiforge"), "serve", "--port", str(port)]
    server = subprocess.Popen(  # noqa: S603 - our own entry point, fixed arguments
        command, env=_server_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60  # generous: CI machines can be heavily loaded
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()[1].decode()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        response = httpx.get(
            f"http://127.0.0.1:{port}/readyz", headers={"X-Request-ID": "serve-probe-0001"}
        )
        assert response.status_code == 200
        assert "server" not in response.headers
    finally:
        server.send_signal(signal.SIGINT)
        _out, err = server.communicate(timeout=60)
    lines = _json_lines(err.decode())
    assert server.returncode == 0
    probes = [line for line in lines if line.get("request_id") == "serve-probe-0001"]
    assert len(probes) == 1
    assert probes[0]["event"] == "request"
    assert probes[0]["route"] == "/readyz"
    events = [str(line.get("event")) for line in lines]
    assert any(event.startswith("Uvicorn running on") for event in events)
    assert not any("HTTP/1.1" in event for event in events)  # uvicorn's access line format


async def test_gateway_calls_are_counted_under_their_route(client: AsyncClient) -> None:
    await client.post("/api/v1/invocations", json={})
    metrics = (await client.get("/metrics")).text
    assert 'route="/api/v1/invocations"' in metrics
