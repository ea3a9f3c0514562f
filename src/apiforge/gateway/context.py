"""Per-request state of one gateway call: the only place stages keep anything per request."""

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.engine.compiler import CompiledApi
from apiforge.engine.loader import AppTarget

# The status of a call cancelled before it answered (its client gone, the server stopping):
# nginx's "client closed request". The after-stages treat it as a failure whose effects may or
# may not have committed; a charged call whose charge committed is a success (stages/charge.py).
CANCELLED = 499


@dataclass(slots=True)
class Caller:
    """Who is calling and on whose behalf: the calling workspace pays and owns the partition."""

    kind: str  # console | app_key | publishable_key | workspace_key | signature
    workspace_id: str | None = None  # None for console callers until the app is known
    account_id: str | None = None
    key_id: str | None = None
    app_id: str | None = None  # keys bound to one app
    role: str | None = None  # workspace keys act with a role
    allowed_origins: tuple[str, ...] = ()


@dataclass(slots=True)
class GatewayContext:
    headers: dict[str, str]  # lower-case names, last value wins (credentials come once)
    client_ip: str
    request_id: str
    raw_body: bytes
    started: float = field(default_factory=time.perf_counter)
    # What an HMAC signature covers besides the body (gateway/signing.py).
    method: str = "POST"
    path: str = "/api/v1/invocations"
    query_string: str = ""

    # Filled by the stages, in pipeline order.
    app_id: str = ""
    api: str = ""
    version: str = "latest"
    args: dict[str, Any] = field(default_factory=dict)
    debug: bool = False
    caller: Caller | None = None
    connection: AsyncConnection | None = None
    target: AppTarget | None = None
    compiled: CompiledApi | None = None
    token: dict[str, Any] | None = None  # verified end-user token claims
    partition: str = ""
    # Writes that must commit with the steps' own (charges, the charged call's log row): run by
    # the run stage after the steps succeed, inside the call's transaction, before its commit.
    settle: list[Callable[["GatewayContext"], Awaitable[None]]] = field(default_factory=list)
    # Concurrency places this call holds (traffic/concurrency.py): released after the call.
    lease: Any = None
    idempotency: Any = None  # the idempotency stage's claim (idempotency/store.py `Claim`)
    charge: Any = None  # the charge stage's reservation (billing/charging.py `Charge`)
    # The UTC month in which the call holds a place in its workspace's callsPerMonth quota.
    quota_held: datetime | None = None
    # True once the call's request-log row was written with its charge (the log stage skips it).
    log_written: bool = False

    # The outcome (`CANCELLED` when the call was cancelled mid-way: what it committed, if
    # anything, is not known to the stages; the charge's after-stage learns it of a charge).
    status: int = 200
    reason: str = ""
    body: bytes = b""
    response_headers: dict[str, str] = field(default_factory=dict)
    stages_run: list[str] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        return self.headers.get(name)
