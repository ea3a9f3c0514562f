"""Test harness: a fresh, migrated database per test (SQLite file copy or PostgreSQL template
clone) and, with services, a Redis key prefix per test. With APIFORGE_TEST_REQUIRE_SERVICES=1 the
run fails at once when PostgreSQL or Redis is unreachable — it never skips."""

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.gateway.signing import NONCE_FILE, MemoryNonceStore
from apiforge.migrate import upgrade
from apiforge.tools.ids import new_id

DATABASE_URL = os.environ.get("APIFORGE_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("APIFORGE_TEST_REDIS_URL", "")
REQUIRE_SERVICES = os.environ.get("APIFORGE_TEST_REQUIRE_SERVICES") == "1"


def _pg_dsn(url: str, database: str | None = None) -> str:
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    if database is not None:
        dsn = dsn.rsplit("/", 1)[0] + "/" + database
    return dsn


async def _pg_execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(_pg_dsn(url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def pytest_sessionstart(session: pytest.Session) -> None:
    if not REQUIRE_SERVICES:
        return
    problems = []
    if not DATABASE_URL.startswith("postgresql"):
        problems.append("APIFORGE_TEST_DATABASE_URL must name a PostgreSQL database")
    else:
        try:
            asyncio.run(_pg_execute(DATABASE_URL, "SELECT 1"))
        except Exception as exc:
            problems.append(f"PostgreSQL unreachable at {DATABASE_URL}: {exc}")
    if not REDIS_URL:
        problems.append("APIFORGE_TEST_REDIS_URL is not set")
    else:
        try:
            redis.Redis.from_url(REDIS_URL).ping()
        except Exception as exc:
            problems.append(f"Redis unreachable at {REDIS_URL}: {exc}")
    if problems:
        pytest.exit("services required but unavailable: " + "; ".join(problems), returncode=3)


def pytest_report_header(config: pytest.Config) -> str:
    backend = "PostgreSQL + Redis" if DATABASE_URL else "embedded SQLite, in-process limits"
    return f"apiforge backend: {backend}"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _id_age_seconds(identifier: str) -> float:
    """Age of a `tools.ids` id from its 48-bit millisecond timestamp (first 10 characters)."""
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"
    millis = 0
    for char in identifier[:10]:
        millis = millis * 32 + alphabet.index(char)
    return time.time() - millis / 1000


async def _drop_stale_databases(url: str) -> None:
    """Databases left by runs that were killed (older than two hours) are dropped."""
    conn = await asyncpg.connect(_pg_dsn(url))
    try:
        names = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE 'apiforge\\_t%'"
        )
        for (name,) in names:
            suffix = name.rsplit("_", 1)[-1]
            try:
                stale = _id_age_seconds(suffix) > 7200
            except ValueError:
                continue
            if stale:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Migrate once per session; tests clone the result."""
    if DATABASE_URL:
        asyncio.run(_drop_stale_databases(DATABASE_URL))
        name = f"apiforge_tpl_{new_id()}"
        asyncio.run(_pg_execute(DATABASE_URL, f'CREATE DATABASE "{name}"'))
        url = DATABASE_URL.rsplit("/", 1)[0] + "/" + name
        upgrade(Settings(database_url=url))
        yield name
        asyncio.run(_pg_execute(DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    else:
        directory = tmp_path_factory.mktemp("template")
        upgrade(Settings(data_dir=directory))
        yield str(directory / "apiforge.db")


@pytest.fixture
def settings(template_database: str, tmp_path: Path) -> Iterator[Settings]:
    yield from fresh_settings(template_database, tmp_path)


def fresh_settings(template_database: str, tmp_path: Path) -> Iterator[Settings]:
    """A fresh database cloned from the template (and a Redis prefix of its own), with a data
    dir under `tmp_path`: the `settings` fixture, also for a module-scoped one (servers shared
    by a module's tests)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # Every app starts as after a graceful stop (no nonce to keep): one that finds no nonce file
    # refuses calls signed before its start (gateway/signing.py), which tests sign freely.
    MemoryNonceStore().save(data_dir / NONCE_FILE)
    common: dict[str, Any] = {
        "data_dir": data_dir,
        "secret_key": "test-secret-" + "x" * 40,
        "log_level": "WARNING",
        # Cheap argon2 so the suite isn't dominated by password hashing (production: defaults).
        "password_time_cost": 1,
        "password_memory_kib": 1024,
        "password_parallelism": 1,
        # Priced APIs are called throughout the suite; billing tests start from 0 themselves.
        "welcome_credits": 10**9,
    }
    if DATABASE_URL:
        name = f"apiforge_t_{new_id()}"
        asyncio.run(
            _pg_execute(DATABASE_URL, f'CREATE DATABASE "{name}" TEMPLATE "{template_database}"')
        )
        prefix = f"apiforge-test:{name}:"
        yield Settings(
            database_url=DATABASE_URL.rsplit("/", 1)[0] + "/" + name,
            redis_url=REDIS_URL or None,
            redis_prefix=prefix,
            **common,
        )
        asyncio.run(_pg_execute(DATABASE_URL, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        if REDIS_URL:
            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{prefix}*"))
            if keys:
                client.delete(*keys)
            client.close()
    else:
        shutil.copy(template_database, data_dir / "apiforge.db")
        yield Settings(**common)


def _release_fastapi_caches() -> None:
    """FastAPI keeps up to 4096 endpoint callables in module-level LRU caches; the docs endpoints
    hold their app, so without this every test's app (and its engine) stays alive and the suite
    slows down as it goes. One app per process in production makes this a test-only concern."""
    from fastapi.dependencies import models

    for name in (
        "_is_gen_callable_cached",
        "_is_async_gen_callable_cached",
        "_is_coroutine_callable_cached",
    ):
        cached = getattr(models, name, None)
        if cached is not None:
            cached.cache_clear()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    yield application
    await shutdown(application)
    _release_fastapi_caches()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
