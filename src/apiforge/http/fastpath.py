"""Exact paths served in front of the management API's middleware stack.

FastAPI's stack (error telemetry, body limit, our request-id / access-log / error / override /
idempotency middleware, exception middleware, exit stack, router) costs a gateway call more than
all of the platform's own stages. A fast path is a pure ASGI endpoint that keeps those
conventions itself (`gateway/endpoint.py`); every other request takes the whole stack.
"""

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send


class _FastPaths:
    def __init__(self, stack: ASGIApp, paths: dict[str, ASGIApp]) -> None:
        self.stack = stack
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            endpoint = self.paths.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.stack(scope, receive, send)


def add_fast_path(app: FastAPI, path: str, endpoint: ASGIApp) -> None:
    """Serve `path` (exactly) with `endpoint` before any middleware. Starlette builds its stack
    once, on the first request, through `build_middleware_stack`: the fast paths go on top."""
    paths: dict[str, ASGIApp] | None = getattr(app.state, "fast_paths", None)
    if paths is None:
        paths = app.state.fast_paths = {}
        build = app.build_middleware_stack

        def build_with_fast_paths() -> ASGIApp:
            return _FastPaths(build(), paths)

        app.build_middleware_stack = build_with_fast_paths  # type: ignore[method-assign]
    paths[path] = endpoint
