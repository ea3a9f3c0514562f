"""`/api/v1/admin/pricing`: administrators set the RU cost of each step type."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from tests.e2e._apps import new_api, new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import make_admin, register

HTTP_STEP = {"id": "fetch", "type": "httpRequest", "url": "https://example.com/"}


async def _prices(client: AsyncClient, headers: dict[str, str]) -> dict[str, int]:
    page = data_of(await client.get("/api/v1/admin/pricing?pageSize=100", headers=headers))
    return {p["stepType"]: p["cost"] for p in page["list"]}


async def test_seeded_prices_are_listed_alphabetically(client: AsyncClient, app: FastAPI) -> None:
    admin = await make_admin(app, client)
    page = data_of(await client.get("/api/v1/admin/pricing?pageSize=100", headers=admin.headers))
    names = [p["stepType"] for p in page["list"]]
    assert names == sorted(names)
    assert page["totalCount"] == len(names)
    prices = await _prices(client, admin.headers)
    assert (prices["httpRequest"], prices["getMany"], prices["set"]) == (5, 1, 0)
    assert page["list"][0]["updatedTime"].endswith("Z")
    by_cost = data_of(
        await client.get("/api/v1/admin/pricing?sort=cost&order=desc", headers=admin.headers)
    )
    assert by_cost["list"][0]["cost"] == max(prices.values())


async def test_admin_sets_a_price_and_new_saves_use_it(client: AsyncClient, app: FastAPI) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    app_id = await new_app(client, user.headers)
    before = await new_api(client, user.headers, app_id, "before", price=10, steps=[HTTP_STEP])
    changed = data_of(
        await client.put(
            "/api/v1/admin/pricing/httpRequest", json={"cost": 7}, headers=admin.headers
        )
    )
    assert (changed["stepType"], changed["cost"]) == ("httpRequest", 7)
    assert (await _prices(client, admin.headers))["httpRequest"] == 7
    after = await new_api(client, user.headers, app_id, "after", price=10, steps=[HTTP_STEP])
    url = f"/api/v1/apps/{app_id}/apis"
    assert data_of(await client.get(f"{url}/{after}", headers=user.headers))["cost"] == 7
    # A saved API keeps its cost until it is saved (or published) again.
    assert data_of(await client.get(f"{url}/{before}", headers=user.headers))["cost"] == 5
    resaved = data_of(await client.patch(f"{url}/{before}", json={}, headers=user.headers))
    assert resaved["cost"] == 7


async def test_non_admins_cannot_read_or_set_prices(client: AsyncClient, app: FastAPI) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    before = await _prices(client, admin.headers)
    assert_error(
        await client.get("/api/v1/admin/pricing", headers=user.headers), 403, "admin_required"
    )
    refused = await client.put(
        "/api/v1/admin/pricing/httpRequest", json={"cost": 0}, headers=user.headers
    )
    assert_error(refused, 403, "admin_required")
    anonymous = await client.put("/api/v1/admin/pricing/httpRequest", json={"cost": 0})
    assert_error(anonymous, 401, "unauthenticated")
    assert await _prices(client, admin.headers) == before


@pytest.mark.parametrize(
    ("step_type", "body", "status"),
    [
        ("httpRequest", {"cost": -1}, 400),
        ("httpRequest", {"cost": "5"}, 400),
        ("httpRequest", {"cost": 1.5}, 400),
        ("httpRequest", {"cost": 10**12}, 400),
        ("httpRequest", {}, 400),
        ("httpRequest", {"cost": 1, "currency": "usd"}, 400),
        ("noSuchStep", {"cost": 1}, 404),
        ("'; DROP TABLE step_prices; --", {"cost": 1}, 404),
        ("x" * 33, {"cost": 1}, 400),
    ],
)
async def test_bad_price_updates_change_nothing(
    client: AsyncClient, app: FastAPI, step_type: str, body: dict[str, Any], status: int
) -> None:
    admin = await make_admin(app, client)
    before = await _prices(client, admin.headers)
    response = await client.put(
        f"/api/v1/admin/pricing/{step_type}", json=body, headers=admin.headers
    )
    assert response.status_code == status, response.text
    if status == 404:
        assert response.json()["data"]["error"] == "step_type_not_found"
    assert await _prices(client, admin.headers) == before
