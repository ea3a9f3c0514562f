"""Every pooled database connection held: a request that finds none free within the pool's
timeout answers 503 `database_busy` (not 500) on both edges, and the next one, once a
connection is free again, 200. The pool is made small and its timeout short for the test."""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.settings import Settings
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import app_client, register

WAIT = 0.2  # the pool's timeout while the test holds its connection


@asynccontextmanager
async def _pool_of_one(settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    """An app whose pool holds one connection and waits `WAIT` for it once exhausted."""
    async with app_client(settings.model_copy(update={"db_pool_size": 1})) as (app, client):
        pool: Any = app.state.engine.sync_engine.pool
        assert pool.size() == 1
        assert hasattr(pool, "_max_overflow")  # SQLAlchemy's QueuePool attributes
        assert hasattr(pool, "_timeout")
        pool._max_overflow = 0  # SQLite's and PostgreSQL's overflow (make_engine) off
        yield app, client


@asynccontextmanager
async def _held(app: FastAPI) -> AsyncIterator[AsyncConnection]:
    """The pool's only connection, held; its timeout short meanwhile, back to its own after (so
    a background writer holding it for a moment then cannot fail the next request)."""
    pool: Any = app.state.engine.sync_engine.pool
    saved = pool._timeout
    async with app.state.engine.connect() as conn:
        await conn.exec_driver_sql("SELECT 1")
        pool._timeout = WAIT
        try:
            yield conn
        finally:
            pool._timeout = saved


async def test_an_exhausted_pool_answers_503_on_the_management_api(settings: Settings) -> None:
    async with _pool_of_one(settings) as (app, client):
        owner = await register(client)
        async with _held(app):
            started = time.monotonic()
            response = await client.get("/api/v1/user/profile", headers=owner.headers)
            elapsed = time.monotonic() - started
        assert_error(response, 503, "database_busy")
        assert response.headers["Retry-After"] == "1"
        assert elapsed < 5
        data_of(await client.get("/api/v1/user/profile", headers=owner.headers))


async def test_an_exhausted_pool_answers_503_on_the_gateway(settings: Settings) -> None:
    async with _pool_of_one(settings) as (app, client):
        owner = await register(client)
        app_id = await notes_app(client, owner)
        _key_id, secret = await app_key(client, owner, app_id)
        data_of(await call(client, secret, app_id, "addNote", {"text": "warm"}))
        async with _held(app):  # a write: a pooled connection on both backends
            started = time.monotonic()
            response = await call(client, secret, app_id, "addNote", {"text": "busy"})
            elapsed = time.monotonic() - started
        assert_error(response, 503, "database_busy")
        assert response.headers["Retry-After"] == "1"
        assert elapsed < 5
        data_of(await call(client, secret, app_id, "addNote", {"text": "back"}))
