"""The FastAPI management app: every router is listed here, in the order the docs show them."""

from fastapi import APIRouter, FastAPI
from fastapi_offline import FastAPIOffline

from apiforge import __version__
from apiforge.http.handlers import install_handlers

ROUTERS: list[APIRouter] = []


def build_api() -> FastAPI:
    app = FastAPIOffline(
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
    return app
