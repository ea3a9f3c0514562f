"""Plans under review: text every backend can store, concurrent plan codes, and quota-hit
filters that are refused rather than crashing the database."""

import asyncio

from fastapi import FastAPI
from httpx import AsyncClient

from tests.e2e._workspaces import assert_error, data_of
from tests.factories import make_admin

NUL = "Gold\x00plan"


async def _plans(client: AsyncClient, headers: dict[str, str]) -> list[dict[str, object]]:
    page = data_of(await client.get("/api/v1/admin/plans?pageSize=100", headers=headers))
    plans: list[dict[str, object]] = page["list"]
    return plans


async def test_plan_text_with_nul_is_refused_and_nothing_changes(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    plan_id = data_of(
        await client.post(
            "/api/v1/admin/plans", json={"code": "gold", "name": "Gold"}, headers=admin.headers
        )
    )["id"]
    before = await _plans(client, admin.headers)

    for body in (
        {"code": "silver", "name": NUL},
        {"code": "silver", "name": "S", "description": NUL},
    ):
        response = await client.post("/api/v1/admin/plans", json=body, headers=admin.headers)
        assert_error(response, 400, "invalid_input")
    for body in ({"name": NUL}, {"description": NUL}):
        response = await client.patch(
            f"/api/v1/admin/plans/{plan_id}", json=body, headers=admin.headers
        )
        data = assert_error(response, 400, "invalid_input")
        assert data["errors"][0]["field"] in body

    assert await _plans(client, admin.headers) == before


async def test_concurrent_plans_with_one_code_get_409_not_500(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    created = await asyncio.gather(
        *(
            client.post(
                "/api/v1/admin/plans", json={"code": "gold", "name": "Gold"}, headers=admin.headers
            )
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in created) == [200, 409, 409, 409], [r.text for r in created]
    for response in created:
        if response.status_code == 409:
            assert_error(response, 409, "plan_code_taken")

    ids = [
        data_of(
            await client.post(
                "/api/v1/admin/plans", json={"code": code, "name": code}, headers=admin.headers
            )
        )["id"]
        for code in ("silver", "bronze")
    ]
    renamed = await asyncio.gather(
        *(
            client.patch(
                f"/api/v1/admin/plans/{plan_id}", json={"code": "tin"}, headers=admin.headers
            )
            for plan_id in ids
        )
    )
    assert sorted(r.status_code for r in renamed) == [200, 409], [r.text for r in renamed]
    codes = sorted(str(plan["code"]) for plan in await _plans(client, admin.headers))
    assert codes.count("gold") == 1
    assert codes.count("tin") == 1
    assert len({"silver", "bronze"} & set(codes)) == 1


async def test_a_quota_hit_filter_with_nul_is_400(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    response = await client.get(
        "/api/v1/admin/quota-hits", params={"workspaceId": "a\x00b"}, headers=admin.headers
    )
    data = assert_error(response, 400, "invalid_input")
    assert data["errors"][0]["field"] == "workspaceId"
