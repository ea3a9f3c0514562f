"""Helpers for the cost-model tests: a public app with a `hits` collection, an API's saved
cost, a minor publish, and a `forEach` step."""

from typing import Any

from httpx import AsyncClient, Response

from tests.e2e._apps import new_app
from tests.e2e._workspaces import data_of
from tests.factories import User


async def hits_app(client: AsyncClient, owner: User, name: str) -> str:
    """A public app of `owner` with a `hits` collection (one integer field `n`)."""
    app_id = await new_app(client, owner.headers, name, visibility="public")
    body = {"appId": app_id, "name": "hits", "fields": [{"name": "n", "type": "integer"}]}
    data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    return app_id


async def api_cost(client: AsyncClient, owner: User, app_id: str, api_id: str) -> int:
    url = f"/api/v1/apps/{app_id}/apis/{api_id}"
    cost: int = data_of(await client.get(url, headers=owner.headers))["cost"]
    return cost


async def publish_minor(client: AsyncClient, owner: User, app_id: str) -> Response:
    url = f"/api/v1/apps/{app_id}/versions"
    return await client.post(url, json={"bump": "minor"}, headers=owner.headers)


def for_each(step_id: str, most: int, *body: dict[str, Any], items: Any = None) -> dict[str, Any]:
    """A `forEach` of `maxIterations` `most` over `items` (none by default)."""
    return {
        "id": step_id,
        "type": "forEach",
        "items": [] if items is None else items,
        "maxIterations": most,
        "steps": list(body),
    }
