"""Readiness checks against real, reachable and unreachable, database and Redis endpoints."""

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from apiforge.core.db import make_engine
from apiforge.core.errors import UnavailableError
from apiforge.core.settings import Settings
from apiforge.core.shared import make_redis
from apiforge.system import health
from apiforge.system.health import HealthService


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers (a hung dependency)."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


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


async def test_ready_with_configured_backends(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url, pool=False)
    redis = make_redis(settings)
    try:
        checks = await HealthService(engine, redis).readiness()
    finally:
        await engine.dispose()
        if redis is not None:
            await redis.aclose()
    assert checks == {"database": "ok", "redis": "ok" if settings.redis_url else "disabled"}


@pytest.mark.usefixtures("settle_sqlite_threads")
async def test_unopenable_database_is_named(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing-dir' / 'x.db'}", pool=False)
    try:
        with pytest.raises(UnavailableError) as caught:
            await HealthService(engine, None).readiness()
    finally:
        await engine.dispose()
    assert caught.value.reason == "not_ready"
    assert caught.value.status == 503
    assert caught.value.details == {"checks": {"database": "failed", "redis": "disabled"}}
    assert "database" in caught.value.message


async def test_refused_redis_is_named(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url, pool=False)
    redis = Redis.from_url("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(UnavailableError) as caught:
            await HealthService(engine, redis).readiness()
    finally:
        await engine.dispose()
        await redis.aclose()
    assert caught.value.details == {"checks": {"database": "ok", "redis": "failed"}}
    assert caught.value.message == "Not ready: redis"


async def test_hung_redis_times_out_instead_of_hanging(
    settings: Settings, silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", 0.3)
    engine = make_engine(settings.resolved_database_url, pool=False)
    redis = Redis.from_url(f"redis://127.0.0.1:{silent_port}/0")
    try:
        with pytest.raises(UnavailableError) as caught:
            await asyncio.wait_for(HealthService(engine, redis).readiness(), timeout=5)
    finally:
        await engine.dispose()
        await redis.aclose()
    assert caught.value.details == {"checks": {"database": "ok", "redis": "timeout"}}
