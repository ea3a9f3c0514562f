"""Helpers for step tests: compile one step and run it in a hand-built `RunContext`."""

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.engine.base import CompiledStep, EngineServices, RunContext, RunLimits
from apiforge.engine.compiler import Compiler
from apiforge.tools.clock import utcnow

SIGNING_SECRET = "app-signing-secret-" + "k" * 40


def compile_step(raw: dict[str, Any]) -> CompiledStep:
    """One step compiled as the builder would on save (raises `DefinitionError` like it)."""
    compiler = Compiler(collections={})
    (step,) = compiler.steps([raw])
    compiler.raise_pending()
    return step


async def _secret(app_id: str, connection: Any = None) -> str:
    return SIGNING_SECRET


async def _no_calls(ctx: RunContext, api: str, version: str, args: dict[str, Any]) -> Any:
    raise AssertionError("callApi was not expected here")


def make_services(
    *,
    allow_hosts: frozenset[str] = frozenset(),
    call_api: Callable[[RunContext, str, str, dict[str, Any]], Awaitable[Any]] = _no_calls,
    extra: dict[str, Any] | None = None,
) -> EngineServices:
    return EngineServices(
        signing_secret_for=_secret,
        call_api=call_api,
        http_allow_hosts=allow_hosts,
        extra=extra or {},
    )


def make_context(
    *,
    services: EngineServices | None = None,
    connection: AsyncConnection | None = None,
    app_id: str = "app-1",
    partition: str = "ws-1",
    version: str = "dev",
    args: dict[str, Any] | None = None,
    env: dict[str, Any] | None = None,
    limits: RunLimits | None = None,
    deadline: float = 0.0,
    token: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> RunContext:
    """A context for steps that need no database may leave `connection` out."""
    return RunContext(
        app_id=app_id,
        builder_workspace_id=partition,
        partition=partition,
        version=version,
        args=args or {},
        token=token,
        env=env or {"config": {}, "secrets": {}},
        now=now or utcnow(),
        connection=cast(AsyncConnection, connection),
        services=services or make_services(),
        limits=limits or RunLimits(),
        deadline=deadline,
    )
