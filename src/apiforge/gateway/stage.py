"""The stage contract (Kong's plugin shape): `on_request` continues or raises; `after` always runs.

Stages keep per-request state only on `GatewayContext`; expensive set-up happens once in the
constructor from the shared `GatewayState`.
"""

from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from apiforge.core.lazydb import SqliteReader
from apiforge.core.settings import Settings
from apiforge.engine.service import EngineState
from apiforge.gateway.context import GatewayContext


@dataclass(slots=True)
class GatewayState:
    """Per-process collaborators of the stages (built once in `app.py`)."""

    settings: Settings
    db: AsyncEngine
    engine: EngineState
    redis: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    # SQLite: the read-only connection calls share for reads made before any statement of
    # theirs (core/lazydb.py); None on PostgreSQL.
    reader: SqliteReader | None = None


class Answered(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a stage that answered the call itself (an idempotent replay): the stages stop
    and `ctx.status`, `ctx.body` and `ctx.response_headers` are sent as they are."""


class Stage(Protocol):
    name: str

    async def on_request(self, ctx: GatewayContext) -> None:
        """Continue by returning; refuse by raising an `ApiforgeError`."""
        ...


class AfterStage(Protocol):
    name: str

    async def after(self, ctx: GatewayContext) -> None:
        """Runs for every call, success or refusal (logging, counters); must not raise."""
        ...
