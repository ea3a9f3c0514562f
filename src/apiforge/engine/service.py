"""Engine state shared by both edges, and ad-hoc runs for `/api/v1/workflows`.

Each call runs in one database transaction of its own (a connection from the app's engine, not
the request's ORM session): committed when the run succeeds, rolled back when anything fails, so
a refused call leaves no trace in the collections. The plan comes from `ApiLoader` (compiled once
per published version); the rest of the path is plain Core queries and the runtime.

A workflow is charged like a workspace's call of its own app's `dev`: the steps' cost, to the
platform, reserved before they run (402), written with their commit (ledger entries and a
request-log row named `(workflow)`), nothing when the run fails. Otherwise running an API's
steps ad hoc would cost nothing where calling the API costs its steps.
"""

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apiforge.billing.charging import Charge, Charger, split
from apiforge.builder.definitions import CalleeCosts, dev_documents, pinned_costs
from apiforge.builder.env import runtime_env
from apiforge.builder.models import App
from apiforge.builder.schemas import json_problem
from apiforge.builder.signing import SigningSecrets, open_signing_secret, read_signing_secrets
from apiforge.core.errors import ApiforgeError, ForbiddenError, ValidationError
from apiforge.core.lazydb import LazyConnection
from apiforge.core.settings import Settings
from apiforge.datasets.crypto import cipher_for
from apiforge.datasets.schema import CollectionSchema
from apiforge.engine.base import CALL_LIMITS, EngineServices, RunContext, RunLimits
from apiforge.engine.compiler import CalleeBound, CompiledApi, compile_workflow
from apiforge.engine.loader import (
    ApiLoader,
    AppNotFoundError,
    AppTarget,
    load_prices,
)
from apiforge.engine.revocations import RevocationCache, RevocationKey
from apiforge.engine.runtime import RunResult, dump_json, execute, masker_for, trace_json
from apiforge.engine.schemas import WorkflowCreate
from apiforge.engine.secrets import SecretCache
from apiforge.tools.clock import utcnow
from apiforge.usage.models import WORKFLOW_API  # a run's name in the ledger and the request log
from apiforge.workspaces.service import CurrentWorkspace

_OMITTED_ROOM = 64  # bytes kept for the `{"omittedEntries": n}` that ends a cut trace


@dataclass(frozen=True, slots=True)
class Invocation:
    """A finished call: the response body (the envelope, serialised once) and extra headers."""

    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class EngineState:
    """Per-process engine collaborators, kept on `app.state.engine_state`."""

    db: AsyncEngine
    settings: Settings
    loader: ApiLoader
    services: EngineServices
    limits: RunLimits
    # The gateway's token check reads apps' secrets here; the builder's `app_changed` hook
    # forgets an app rotated through this process.
    secrets: SecretCache
    # And the revocations of users' tokens older than their app's latest revocation.
    revocations: RevocationCache


def build_engine_state(db: AsyncEngine, settings: Settings) -> EngineState:
    loader = ApiLoader()

    async def signing_secret_for(app_id: str, conn: AsyncConnection) -> str:
        secret = await conn.scalar(select(App.signing_secret).where(App.id == app_id))
        if secret is None:
            raise AppNotFoundError()
        return open_signing_secret(settings, secret)

    async def signing_secrets_for(app_id: str, conn: AsyncConnection) -> SigningSecrets:
        secrets = await read_signing_secrets(settings, conn, app_id)
        if secrets is None:
            raise AppNotFoundError()
        return secrets

    async def call_api(callee: RunContext, api: str, version: str, args: dict[str, Any]) -> Any:
        """`callApi`: the same app's `api` at a pinned version, in the caller's transaction,
        partition and budgets (the step prepared `callee`)."""
        target = AppTarget(callee.app_id, callee.builder_workspace_id, {}, version, False)
        compiled = await loader.load(callee.connection, target, api)
        if not compiled.enabled and version != "dev":
            raise ForbiddenError("The called API is disabled", reason="api_disabled")
        callee.args = compiled.validate_args(args)
        callee.api = api
        return (await execute(compiled, callee)).data

    secrets = SecretCache(signing_secrets_for)
    revocations = RevocationCache()

    def tokens_revoked(app_id: str, partition: str, sub: str) -> None:
        """A revocation committed through this process applies at once here: the app's latest
        revocation and the user's are read again."""
        secrets.forget(app_id)
        revocations.forget(RevocationKey(app_id, partition, sub))

    services = EngineServices(
        signing_secret_for=signing_secret_for,
        call_api=call_api,
        record_cipher=cipher_for(settings.signing_key),
        http_allow_hosts=frozenset(settings.http_allow_hosts),
        tokens_revoked=tokens_revoked,
    )
    return EngineState(db, settings, loader, services, CALL_LIMITS, secrets, revocations)


def envelope(data_json: bytes) -> bytes:
    return b'{"code":200,"message":"success","data":' + data_json + b"}"


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    """The request that runs a workflow, as its request-log row records it."""

    request_id: str
    client_ip: str
    key_id: str | None = None  # the `ws-` key that runs it, if one does
    started: float = field(default_factory=time.perf_counter)

    def log_row(self, current: CurrentWorkspace, app_id: str) -> dict[str, object]:
        """The run's request-log row, written with its charge (the columns of a gateway
        call's: `gateway/stages/log.py`). Its args are not kept: a workflow declares no
        params, so nothing says which of them are sensitive."""
        elapsed = time.perf_counter() - self.started
        return {
            "created_at": utcnow() - timedelta(seconds=elapsed),
            "request_id": self.request_id[:128],
            "workspace_id": current.id,
            "app_workspace_id": current.id,
            "account_id": current.account_id,
            "key_id": self.key_id,
            "caller_kind": "workspace_key" if self.key_id else "console",
            "app_id": app_id,
            "api": WORKFLOW_API,
            "version": "dev",
            "status": 200,
            "reason": "",
            "latency_ms": round(elapsed * 1000, 3),
            "client_ip": self.client_ip[:45],
            "args": None,
        }


class EngineService:
    """Runs an ad-hoc step list (`run_workflow`); stored APIs run through the gateway. Owns the
    call's transaction, unlike the other services, because a call's writes must not ride on the
    request session (they commit or roll back with the run, whatever else the request did)."""

    def __init__(self, state: EngineState) -> None:
        self.state = state

    async def run_workflow(
        self, current: CurrentWorkspace, body: WorkflowCreate, charger: Charger, run: WorkflowRun
    ) -> Invocation:
        """Run an ad-hoc step list against the `dev` collections of one of the current
        workspace's apps, in the current workspace's partition (the steps are not stored),
        charged their cost (see the module docstring)."""
        charge: Charge | None = None
        succeeded = False
        # Checked out on the first statement and given back while the run holds nothing on it
        # (before the steps on SQLite, before an `httpRequest` waits on every backend), as a
        # gateway call's: workflows waiting on slow upstreams must not empty the pool.
        conn = LazyConnection(self.state.db)
        try:
            try:
                target = await self.state.loader.target(conn, body.app_id, "dev")
                if target.workspace_id != current.id:
                    raise AppNotFoundError()
                compiled = await _compile(conn, self.state.loader, target.id, body.steps)
                args = compiled.validate_args(body.args)
                debit, profit, platform = split(0, compiled.cost, own_app=True)
                if debit > 0:
                    charge = await charger.reserve(
                        conn,
                        caller_workspace_id=current.id,
                        builder_workspace_id=current.id,
                        debit=debit,
                        profit=profit,
                        platform=platform,
                        app_id=target.id,
                        api=WORKFLOW_API,
                        request_id=run.request_id[:128],
                    )
                ctx = self._context(conn, target, current.id, args, body.debug)
                await conn.let_go()
                body_bytes = await self._run(compiled, ctx)
                if charge is not None:
                    await charger.settle(conn, charge, run.log_row(current, target.id))
                await conn.commit()
                if charge is not None:
                    await charger.confirm(conn, charge)
                succeeded = True
            finally:
                await conn.close()
        finally:
            # Once the connection is given back: on PostgreSQL a hold is released on another.
            if charge is not None:
                await charger.finish(charge, succeeded)
        return Invocation(body_bytes)

    def _context(
        self,
        conn: AsyncConnection,
        target: AppTarget,
        partition: str,
        args: dict[str, Any],
        debug: bool,
    ) -> RunContext:
        return RunContext(
            app_id=target.id,
            builder_workspace_id=target.workspace_id,
            partition=partition,
            version=target.version or "dev",
            args=args,
            token=None,
            env=runtime_env(self.state.settings, target.env),
            now=utcnow(),
            connection=conn,
            services=self.state.services,
            limits=self.state.limits,
            trace=[] if debug else None,
        )

    async def _run(self, compiled: CompiledApi, ctx: RunContext) -> bytes:
        try:
            result = await execute(compiled, ctx)
        except ApiforgeError as exc:
            if ctx.trace is not None:
                exc.details["trace"] = trace_of(compiled, ctx)
            raise
        if ctx.trace is None:
            return envelope(result.body)
        return envelope(debug_body(result, trace_of(compiled, ctx)))


async def _compile(
    conn: AsyncConnection, loader: ApiLoader, app_id: str, steps: list[Any]
) -> CompiledApi:
    """A workflow's steps compiled against the app's `dev` collections and current prices, held
    to what a saved API's steps are held to: JSON a definition may hold (at most
    `MAX_JSON_DEPTH` deep: the compiler recurses into values), and `callApi` costed."""
    problem = json_problem(steps)
    if problem is not None:
        raise ValidationError(
            "The steps are not a valid definition",
            reason="invalid_definition",
            errors=[{"field": "steps", "message": problem}],
        )
    collections = await loader.collections(conn, app_id)
    prices = await load_prices(conn)
    callees = await _callee_costs(conn, app_id, steps, collections, prices)
    return compile_workflow(steps, collections, prices, callee_cost=callees)


async def _callee_costs(
    conn: AsyncConnection,
    app_id: str,
    steps: list[Any],
    collections: Mapping[str, CollectionSchema],
    prices: Mapping[str, int],
) -> CalleeBound | None:
    """What the workflow's `callApi` steps add to its cost: their callees' costs, as if the steps
    were one more `dev` API of the app (`builder/definitions.py`). Free, they would run any API's
    priced steps for the price of `callApi` (0 by default). None when no step calls an API."""
    if not _calls_api(steps):
        return None
    definitions = await dev_documents(conn, app_id)
    pinned = await pinned_costs(conn, app_id, [*definitions.values(), {"steps": steps}])
    return CalleeCosts(definitions, collections, prices, pinned).at(0)


def _calls_api(steps: Any) -> bool:
    """Whether a `callApi` step is among `steps`, nested ones too (depth checked before)."""
    if isinstance(steps, list):
        return any(_calls_api(item) for item in steps)
    if isinstance(steps, dict):
        return steps.get("type") == "callApi" or any(_calls_api(v) for v in steps.values())
    return False


def trace_of(compiled: CompiledApi, ctx: RunContext) -> list[dict[str, Any]]:
    """The call's debug trace, masked and cut to the response-size limit (`_within`)."""
    rows = trace_json(ctx.trace or [], masker_for(compiled, ctx))
    return _within(rows, ctx.limits.max_response_bytes)


def _within(rows: Sequence[Mapping[str, Any]], budget: int) -> list[dict[str, Any]]:
    """`rows` serialising to at most `budget` bytes, in order: a row that would go over keeps
    its step id, type, time and error, with `input` and `output` null and `omittedBytes` its
    full size; once not even that fits, a last `{"omittedEntries": n}` counts the rest.

    Cut rather than refused: a debug call must commit or fail exactly as the same call without
    `debug`, and the big values are usually what is being debugged (other steps stay whole).
    Each row goes through JSON so the error renderer (plain orjson) can always serialise it."""
    out: list[dict[str, Any]] = []
    used = 2 + _OMITTED_ROOM  # the brackets, and room for the closing `omittedEntries`
    for index, row in enumerate(rows):
        encoded = dump_json(row)
        if used + len(encoded) + 1 > budget:
            stub = {**row, "input": None, "output": None, "omittedBytes": len(encoded)}
            encoded = dump_json(stub)
            if used + len(encoded) + 1 > budget:
                out.append({"omittedEntries": len(rows) - index})
                break
        out.append(orjson.loads(encoded))
        used += len(encoded) + 1
    return out


def debug_body(result: RunResult, trace: Sequence[Mapping[str, Any]]) -> bytes:
    return b'{"result":' + result.body + b',"trace":' + dump_json(trace) + b"}"
