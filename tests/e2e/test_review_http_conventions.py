"""DESIGN.md §2 on the platform's own routes: a 405 names every method of the path."""

import pytest
from httpx import AsyncClient

from tests.e2e._workspaces import assert_error
from tests.factories import register


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        # FastAPI makes one route per method: Starlette's 405 named only the first (`GET`).
        ("DELETE", "/api/v1/workspaces", "GET, HEAD, POST"),
        ("PUT", "/api/v1/api-keys", "GET, HEAD, POST"),
        ("POST", "/api/v1/workspaces/ws-unknown", "DELETE, GET, HEAD, PATCH"),
        ("GET", "/api/v1/auth/register", "POST"),
    ],
)
async def test_a_405_allows_every_method_of_the_path(
    client: AsyncClient, method: str, path: str, allow: str
) -> None:
    user = await register(client)
    response = await client.request(method, path, headers=user.headers)
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow
    assert response.headers["x-request-id"]


async def test_a_405_after_method_override_allows_every_method(client: AsyncClient) -> None:
    user = await register(client)
    headers = {**user.headers, "X-HTTP-Method-Override": "delete"}
    response = await client.post("/api/v1/workspaces", headers=headers, json={"name": "x"})
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD, POST"
