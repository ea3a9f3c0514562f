"""The platform's API docs work offline: local assets only, and a complete OpenAPI 3.1 schema."""

import re

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from httpx import AsyncClient
from starlette.routing import Mount

# Routes that serve the docs themselves and so are not described by them.
DOCS_ROUTES = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
DOCS_MOUNTS = {"/static-offline-docs"}
_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_assets(client: AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"https?://", html), "a docs page references a remote URL"
    assert "//cdn" not in html
    assets = _REFERENCE.findall(html)
    assert assets, "expected the page to reference its script and styles"
    for asset in assets:
        assert asset.startswith("/"), asset
        assert not asset.startswith("//"), asset
        fetched = await client.get(asset)
        assert fetched.status_code == 200, asset
        assert fetched.content, asset
    assert "/openapi.json" in html


async def test_swagger_oauth2_redirect_page_is_served(client: AsyncClient) -> None:
    response = await client.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert not re.search(r"https?://", response.text)


async def test_openapi_is_3_1_and_describes_every_route(app: FastAPI, client: AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.1.")
    assert schema["info"]["title"] == "apiforge"
    paths = schema["paths"]
    documented = 0
    for context in iter_route_contexts(app.routes):
        route, path = context.original_route, context.path
        if isinstance(route, Mount):
            assert path in DOCS_MOUNTS, f"undocumented mount {path}"
        elif path in DOCS_ROUTES:
            continue
        elif path == "/api/v1/invocations" and not isinstance(route, APIRoute):
            # The gateway is a plain Starlette route, documented by hand in app.py.
            assert "post" in paths[path]
            assert paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        else:
            assert isinstance(route, APIRoute), f"{path} is not a FastAPI route: {route!r}"
            assert route.include_in_schema, f"{path} is hidden from the docs"
            assert path in paths, f"{path} missing from /openapi.json"
            for method in (route.methods or set()) - {"HEAD"}:
                assert method.lower() in paths[path], f"{method} {path} missing"
                documented += 1
    assert documented >= 4  # at least the system routes, so the walk cannot pass vacuously
    assert {"/api/v1/version", "/healthz", "/readyz", "/metrics"} <= set(paths)


async def test_metrics_is_documented_as_plain_text(client: AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    content = schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert "text/plain" in content
    assert "application/json" not in content
