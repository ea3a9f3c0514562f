"""Helpers for the traffic-control tests: a slow upstream that measures how many calls are in
flight inside the API, a redis-server of the test's own, and a small app calling the upstream."""

import asyncio
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from httpx import AsyncClient

from tests._servers import free_port
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key
from tests.e2e._workspaces import data_of
from tests.factories import User

ECHO_STEPS = [{"id": "echo", "type": "set", "value": {"expr": "args.text"}}]
TEXT = [{"name": "text", "type": "string", "default": "x", "max": 200}]


class SlowUpstream:
    """An HTTP server the API's `httpRequest` step calls: it answers after `delay` seconds (or
    when `gate` opens) and records how many requests it holds at once — the number of calls in
    flight inside the API, measured where the steps run."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.served = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/slow"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                if self.gate is not None:
                    await self.gate.wait()
                else:
                    await asyncio.sleep(self.delay)
            finally:
                self.in_flight -= 1
            self.served += 1
            body = b'{"ok":true}'
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def wait_in_flight(self, count: int, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while self.in_flight != count:
            assert time.monotonic() < deadline, f"in flight {self.in_flight}, wanted {count}"
            await asyncio.sleep(0.01)


@asynccontextmanager
async def slow_upstream(delay: float = 0.0) -> AsyncIterator[SlowUpstream]:
    upstream = SlowUpstream(delay)
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.stop()


class RedisServer:
    """A redis-server of the test's own on a free port, which the test may stop and restart."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is needed by the traffic tests"
        self.binary = binary
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.directory = tempfile.mkdtemp(prefix="apiforge-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _spawn(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 - the system's redis-server, fixed arguments
            [
                self.binary,
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.directory,
                "--bind",
                "127.0.0.1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def start(self) -> None:
        self._spawn()
        client = aioredis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        try:
            while True:
                try:
                    await client.ping()
                    return
                except (OSError, aioredis.ConnectionError):
                    assert time.monotonic() < deadline, "redis-server did not start"
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(self.process.wait)
        self.process = None


@asynccontextmanager
async def redis_server() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
        shutil.rmtree(server.directory, ignore_errors=True)


@asynccontextmanager
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    """A redis-py client of a redis-server of its own."""
    async with redis_server() as server:
        client = aioredis.Redis.from_url(server.url)
        try:
            yield client
        finally:
            await client.aclose()


async def limited_app(
    client: AsyncClient,
    owner: User,
    upstream_url: str | None = None,
    *,
    visibility: str = "private",
    **limits: Any,
) -> tuple[str, str]:
    """(app id, app key) of a published app with `echo` and, given an upstream, `slow` (an
    `httpRequest` to it), with `limits` as its traffic limits."""
    app_id = await new_app(client, owner.headers, "Traffic", visibility=visibility)
    await new_api(client, owner.headers, app_id, "echo", params=TEXT, steps=ECHO_STEPS)
    await new_api(client, owner.headers, app_id, "other", params=TEXT, steps=ECHO_STEPS)
    if upstream_url is not None:
        step = {"id": "up", "type": "httpRequest", "url": upstream_url, "timeout": 10}
        await new_api(client, owner.headers, app_id, "slow", params=TEXT, steps=[step], price=5)
    response = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
    )
    data_of(response)
    if limits:
        await set_limits(client, owner, app_id, **limits)
    _, secret = await app_key(client, owner, app_id)
    return app_id, secret


async def set_limits(client: AsyncClient, owner: User, app_id: str, **limits: Any) -> Any:
    response = await client.put(
        f"/api/v1/apps/{app_id}/traffic-limits", json=limits, headers=owner.headers
    )
    return data_of(response)


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (labels in the order given), 0 if absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
