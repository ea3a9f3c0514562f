"""The FastAPI management app: every router is listed here, in the order the docs show them."""

from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline

from apiforge import __version__
from apiforge.accounts.openapi import document_console_only
from apiforge.accounts.router import router as accounts_router
from apiforge.accounts.settings_router import router as settings_router
from apiforge.admin.router import router as admin_router
from apiforge.billing.router import charts_router
from apiforge.billing.router import router as billing_router
from apiforge.builder.pricing_router import router as pricing_router
from apiforge.builder.router import router as builder_router
from apiforge.datasets.router import router as datasets_router
from apiforge.engine.router import router as engine_router
from apiforge.files.router import router as files_router
from apiforge.http.handlers import install_handlers
from apiforge.idempotency.router import router as idempotency_router
from apiforge.keys.router import router as keys_router
from apiforge.plans.router import router as plans_router
from apiforge.rights.router import router as rights_router
from apiforge.system.router import router as system_router
from apiforge.traffic.router import router as traffic_router
from apiforge.usage.router import router as usage_router
from apiforge.workspaces.router import router as workspaces_router

ROUTERS: list[APIRouter] = [
    system_router,
    accounts_router,
    settings_router,
    workspaces_router,
    plans_router,
    admin_router,
    pricing_router,
    builder_router,
    rights_router,
    datasets_router,
    files_router,
    engine_router,
    keys_router,
    traffic_router,
    usage_router,
    charts_router,
    billing_router,
    idempotency_router,
]


def operation_id(route: APIRoute) -> str:
    """The endpoint function's name: a short snake_case id that SDK generators turn into method
    names (FastAPI's default appends the path and method, `list_apps_api_v1_apps_get`). Endpoint
    names are therefore unique across routers; FastAPI warns on a duplicate."""
    return route.name


def build_api() -> FastAPI:
    app = FastAPIOffline(
        generate_unique_id_function=operation_id,
        title="apiforge",
        version=__version__,
        summary="Build, version, price and serve APIs through one metered gateway.",
        docs_url="/docs",
        redoc_url="/redoc",
        openapi_url="/openapi.json",
    )
    for router in ROUTERS:
        app.include_router(router)
    install_handlers(app)
    _document_credentials(app)
    return app


def _document_credentials(app: FastAPI) -> None:
    """FastAPI's document, with each operation listing only the credentials it takes."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            document_console_only(schema, app.routes)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
