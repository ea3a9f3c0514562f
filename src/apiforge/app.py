"""Composes the ASGI application: state, both edges and the middleware order, in one place."""

import asyncio
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.routing import Route

from apiforge.accounts import passwords
from apiforge.api import build_api
from apiforge.builder.transfer_router import DOCUMENT_PATHS
from apiforge.core.checkpoint import WalCheckpointer
from apiforge.core.db import dispose_engine, make_engine, make_sessionmaker, sqlite_file
from apiforge.core.lazydb import SqliteReader
from apiforge.core.settings import Settings
from apiforge.core.shared import close_limits_storage, make_limits_storage, make_redis
from apiforge.engine.service import build_engine_state
from apiforge.files.router import upload_body_limits
from apiforge.files.storage import FileStorage
from apiforge.gateway.endpoint import GatewayEndpoint
from apiforge.gateway.openapi import (
    document_errors,
    document_gateway_security,
    envelope_schema,
    invocation_path,
)
from apiforge.gateway.pipeline import build_stages
from apiforge.gateway.signing import save_nonces
from apiforge.gateway.stage import GatewayState
from apiforge.gateway.stages.charge import close_charger
from apiforge.gateway.stages.log import drain_request_logs
from apiforge.http import metrics
from apiforge.http.fastpath import add_fast_path
from apiforge.http.middleware import (
    AccessLogMiddleware,
    BodyLimitMiddleware,
    ErrorMiddleware,
    HeadMiddleware,
    MethodOverrideMiddleware,
    RequestIdMiddleware,
    SingleHeaderMiddleware,
    Utf8JsonMiddleware,
)
from apiforge.idempotency.middleware import IdempotencyMiddleware
from apiforge.idempotency.openapi import document_idempotency
from apiforge.idempotency.store import close_shared_store
from apiforge.keys.lookup import KeyLookup
from apiforge.logs import configure_logging
from apiforge.plans.meter import close_quota_meter
from apiforge.system.health import warn_if_redis_evicts
from apiforge.traffic.control import TrafficControl
from apiforge.usage.retention import LogRetention

log = structlog.get_logger(__name__)


def middleware(settings: Settings) -> list[Middleware]:
    """Outermost first. The request id wraps everything so even a 500 carries it; the access log
    sits outside the error guard so it records the 500; a credential sent twice is refused before
    anything reads one; method override and HEAD-as-GET precede routing; the body limit is
    inside them so its error is rendered by the envelope handlers, and the UTF-8 check innermost."""
    return [
        Middleware(RequestIdMiddleware),
        Middleware(AccessLogMiddleware),
        Middleware(ErrorMiddleware),
        Middleware(SingleHeaderMiddleware),
        Middleware(MethodOverrideMiddleware),
        Middleware(HeadMiddleware),
        Middleware(
            BodyLimitMiddleware,
            max_bytes=settings.max_body_bytes,
            per_path=upload_body_limits(settings),
        ),
        # Idempotency of management writes: innermost, it sees the effective method and body.
        Middleware(IdempotencyMiddleware),
        # Inside it, so a body replayed to the route is checked as it is read.
        Middleware(Utf8JsonMiddleware, documents=DOCUMENT_PATHS),
    ]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings)
    passwords.configure(
        settings.password_time_cost, settings.password_memory_kib, settings.password_parallelism
    )
    app = build_api()
    engine = make_engine(
        settings.resolved_database_url,
        pool_size=settings.db_pool_size,
        timeout=settings.db_timeout_seconds,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.redis = make_redis(settings)
    app.state.limits_storage = make_limits_storage(settings)
    app.state.engine_state = build_engine_state(engine, settings)
    # One per process, shared by the gateway and the management API (keys/lookup.py).
    app.state.keys = KeyLookup(settings, engine)
    # Limits shared by the gateway stages, sign-in and key creation (traffic/control.py).
    app.state.traffic = TrafficControl(settings, app.state.redis)
    app.user_middleware = middleware(settings)
    mount_gateway(app)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Everything built so far (modules, routes, compiled schemas) lives as long as the
        # process: keep it out of the collector's generations, so their scans stay short.
        gc.collect()
        gc.freeze()
        metrics.worker_started()
        sweeping = asyncio.create_task(sweep_files(settings), name="files-sweep")
        policy = asyncio.create_task(warn_if_redis_evicts(app.state.redis), name="redis-policy")
        checkpointer = wal_checkpointer(settings)
        if checkpointer is not None:
            checkpointer.start()
        # Always: it prunes expired token revocations; the logs only with a retention set.
        retention = LogRetention(engine, settings.log_retention_days)
        retention.start()
        yield
        # Guarded as `shutdown`'s own steps: a failing stop must not skip the flushes after it.
        stops: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
            ("files_sweep", lambda: sweeping),  # a thread can't be stopped: it runs to its end
            ("redis_policy", lambda: policy),  # one bounded look at Redis's memory policy
            ("retention", retention.stop),
        ]
        if checkpointer is not None:
            stops.append(("checkpointer", checkpointer.stop))
        try:
            await shutdown(app, stops)
        finally:
            gc.unfreeze()
            metrics.worker_exiting()

    app.router.lifespan_context = lifespan
    return app


def wal_checkpointer(settings: Settings) -> WalCheckpointer | None:
    """The background WAL checkpoint of an SQLite file (core/checkpoint.py)."""
    path = sqlite_file(settings.resolved_database_url)
    return None if path is None else WalCheckpointer(path)


async def sweep_files(settings: Settings) -> None:
    """What killed processes left in the files directory (`FileStorage.sweep`), removed in a
    worker thread while the server already serves: a deleted workspace's bytes may be thousands
    of files on a network file system."""
    try:
        await asyncio.to_thread(FileStorage(settings.resolved_files_dir).sweep)
    except Exception:  # a start-up chore: never a reason to stop serving
        log.exception("files_sweep_failed")


def mount_gateway(app: FastAPI) -> None:
    """The gateway is a fast path in front of the middleware stack (`http/fastpath.py`), also a
    plain route of the router (for its slash redirect), and documented in the same OpenAPI
    document."""
    state = GatewayState(
        settings=app.state.settings,
        db=app.state.engine,
        engine=app.state.engine_state,
        redis=app.state.redis,
        extra={"keys": app.state.keys, "traffic": app.state.traffic},
        reader=SqliteReader.for_url(app.state.settings.resolved_database_url),
    )
    stages, after = build_stages(state)
    app.state.gateway_state = state
    endpoint = GatewayEndpoint(state, stages, after)
    add_fast_path(app, endpoint.route_path, endpoint)
    app.router.routes.insert(0, Route(endpoint.route_path, endpoint))
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            schema["paths"]["/api/v1/invocations"] = invocation_path()
            document_idempotency(schema)
            document_errors(schema)
            document_gateway_security(schema)
            schema.setdefault("components", {}).setdefault("schemas", {})
            schema["components"]["schemas"].setdefault("Envelope", envelope_schema())
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


async def shutdown(
    app: FastAPI, first: Sequence[tuple[str, Callable[[], Awaitable[Any]]]] = ()
) -> None:
    """Stop in order, each step whatever the ones before it did: a failing step (a full disk at
    the charges' writer) must not skip the later ones that write what is still in memory (quota
    hits, last-used times) or give connections back. The first failure is raised at the end.
    `first` runs before them under the same guard (the lifespan's background tasks)."""
    state, gateway = app.state, app.state.gateway_state
    reader = gateway.reader
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        *first,
        ("nonces", lambda: save_nonces(gateway)),  # signed calls' nonces, for the next start
        ("request_logs", lambda: drain_request_logs(gateway)),
        ("charger", lambda: close_charger(gateway)),  # SQLite: the charges' writer connection
        ("reader", lambda: reader.close() if reader is not None else _nothing()),
        ("idempotency", lambda: close_shared_store(gateway.extra)),  # its store's connection
        ("quota_meter", lambda: close_quota_meter(state.engine)),  # the quota hits in memory
        ("keys", lambda: state.keys.close()),  # the last-used times still in memory
        ("loader", lambda: state.engine_state.loader.close()),  # the target re-reads in flight
        ("secrets", lambda: state.engine_state.secrets.close()),  # the secrets' re-reads
        ("revocations", lambda: state.engine_state.revocations.close()),  # and the users'
        ("traffic_rules", lambda: state.traffic.rules.close()),  # the limits' re-reads, as well
        ("engine", lambda: dispose_engine(state.engine)),  # and those calls still hold
        ("limits_storage", lambda: close_limits_storage(state.limits_storage)),
        # After the engine, whose grace lets the calls still running end: their concurrency
        # releases, queued as they end, are sent here (Redis only; nothing here reads the
        # database, and a limits re-read a late call started is stopped here too).
        ("traffic", lambda: state.traffic.close()),
        ("redis", lambda: state.redis.aclose() if state.redis is not None else _nothing()),
    ]
    failed: Exception | None = None
    for name, step in steps:
        try:
            await step()
        except Exception as exc:
            log.exception("shutdown_step_failed", step=name)
            failed = failed or exc
    if failed is not None:
        raise failed


async def _nothing() -> None:
    return None
