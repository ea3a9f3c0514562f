"""System routes: version and release notes, liveness, readiness, Prometheus metrics."""

import secrets
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
from starlette.responses import Response

from apiforge.core.errors import AuthenticationError
from apiforge.http.deps import SettingsDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.metrics import render
from apiforge.system.health import HealthService
from apiforge.system.schemas import HealthRead, PlatformVersionRead, ReadinessRead
from apiforge.system.service import version_info

router = APIRouter(tags=["system"])

_NOT_READY: dict[int | str, dict[str, Any]] = {
    503: {"description": "A dependency is unreachable; `data.checks` names it (`not_ready`)"}
}
_PROMETHEUS_TEXT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Prometheus text exposition format 0.0.4 (not the envelope)",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    401: {"description": "`APIFORGE_METRICS_TOKEN` is set and the request did not bear it"},
}


def _health_service(request: Request) -> HealthService:
    return HealthService(request.app.state.engine, request.app.state.redis)


HealthServiceDep = Annotated[HealthService, Depends(_health_service)]


# Plain `def`: reading CHANGELOG.md (on a cache miss) runs in the thread pool, not the event loop.
@router.get("/api/v1/version", summary="Running version, latest release and release notes")
def get_platform_version(settings: SettingsDep) -> Envelope[PlatformVersionRead]:
    return ok(version_info(settings))


# HEAD too, as on every GET route (http/middleware.py `HeadMiddleware`): load balancers often
# probe with it, and a 405 reads as down.
@router.get("/healthz", summary="Liveness: the process answers (touches no dependency)")
async def healthz() -> Envelope[HealthRead]:
    return ok(HealthRead(status="ok"))


@router.get(
    "/readyz", summary="Readiness: database, and Redis when configured", responses=_NOT_READY
)
async def readyz(service: HealthServiceDep) -> Envelope[ReadinessRead]:
    return ok(ReadinessRead(status="ready", checks=await service.readiness()))


@router.get(
    "/metrics",
    summary="Prometheus metrics of the server (all its workers)",
    response_class=PlainTextResponse,
    responses=_PROMETHEUS_TEXT,
)
def metrics(request: Request, settings: SettingsDep) -> Response:
    """Open unless `APIFORGE_METRICS_TOKEN` is set: then only a scraper bearing it reads the
    route templates, volumes and refusals of every tenant together."""
    expected = settings.metrics_token
    if expected is not None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        # Header values arrive decoded as latin-1: back to the bytes sent, which a scraper
        # sends as the token's UTF-8 (re-encoding as UTF-8 never matched a non-ASCII token).
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            given.strip(" \t").encode("latin-1"), expected.get_secret_value().encode()
        ):
            raise AuthenticationError(
                "/metrics needs the metrics token", headers={"WWW-Authenticate": "Bearer"}
            )
    return Response(render(), media_type=CONTENT_TYPE_PLAIN_0_0_4)
