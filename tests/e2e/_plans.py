"""Putting a workspace on a plan of its own, as an administrator does over the HTTP API."""

from httpx import AsyncClient

from tests.e2e._workspaces import data_of
from tests.factories import User


async def on_plan(
    client: AsyncClient, admin: User, workspace_id: str, code: str = "custom", **quotas: int
) -> str:
    """A new plan with `quotas` (the rest the free plan's), `workspace_id` moved onto it; its id.
    Quota names as the API spells them (`requestsPerMinute=2`)."""
    body = {"code": code, "name": code.title(), "quotas": quotas}
    plan = data_of(await client.post("/api/v1/admin/plans", json=body, headers=admin.headers))
    moved = await client.put(
        f"/api/v1/admin/workspaces/{workspace_id}/plan",
        json={"planId": plan["id"]},
        headers=admin.headers,
    )
    assert data_of(moved)["planId"] == plan["id"]
    plan_id: str = plan["id"]
    return plan_id
