"""Shared helpers of the engine-core tests: compile a definition, run it on a real connection."""

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.datasets.schema import CollectionSchema
from apiforge.engine.base import EngineServices, RunContext, RunLimits
from apiforge.engine.compiler import CompiledApi, compile_api
from apiforge.engine.runtime import RunResult, execute
from apiforge.tools.clock import utcnow


async def _secret(app_id: str, connection: Any = None) -> str:
    return "s" * 40


async def _no_call(ctx: RunContext, api: str, version: str, args: dict[str, Any]) -> Any:
    raise AssertionError("no callApi here")


SERVICES = EngineServices(signing_secret_for=_secret, call_api=_no_call)


@pytest.fixture
async def connection(app: FastAPI) -> AsyncIterator[AsyncConnection]:
    """A connection to the test database (SQLite, or PostgreSQL with services) inside a
    transaction, with a `probe` table (unique names) for steps to write."""
    async with app.state.engine.connect() as conn:
        await conn.execute(text("CREATE TABLE probe (name VARCHAR(64) NOT NULL UNIQUE)"))
        await conn.commit()
        async with conn.begin():
            yield conn


def build(
    steps: list[Any],
    *,
    params: list[Any] | None = None,
    return_steps: list[str] | None = None,
    prices: Mapping[str, int] | None = None,
    collections: Mapping[str, CollectionSchema] | None = None,
) -> CompiledApi:
    definition: dict[str, Any] = {"api": "probe", "params": params or [], "steps": steps}
    if return_steps is not None:
        definition["returnSteps"] = return_steps
    return compile_api(definition, collections or {}, prices or {})


def context(
    connection: AsyncConnection,
    *,
    args: dict[str, Any] | None = None,
    env: dict[str, Any] | None = None,
    limits: RunLimits | None = None,
    debug: bool = False,
) -> RunContext:
    return RunContext(
        app_id="app",
        builder_workspace_id="ws",
        partition="ws",
        version="dev",
        args=args or {},
        token=None,
        env=env or {"config": {}, "secrets": {}},
        now=utcnow(),
        connection=connection,
        services=SERVICES,
        limits=limits or RunLimits(),
        trace=[] if debug else None,
    )


async def run(
    compiled: CompiledApi,
    connection: AsyncConnection,
    *,
    args: dict[str, Any] | None = None,
    env: dict[str, Any] | None = None,
    limits: RunLimits | None = None,
    debug: bool = False,
) -> RunResult:
    checked = compiled.validate_args(args or {})
    ctx = context(connection, args=checked, env=env, limits=limits, debug=debug)
    return await execute(compiled, ctx)


async def probe_names(connection: AsyncConnection) -> list[str]:
    rows = await connection.execute(text("SELECT name FROM probe"))
    return sorted(str(row[0]) for row in rows)
