"""`/api/v1/user/plans` and `/api/v1/admin/plans`: usage, quotas, one default, moving workspaces."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.plans.models import FREE_PLAN_QUOTAS
from tests.e2e._workspaces import (
    INJECTION,
    SCRIPT,
    add_member,
    assert_error,
    data_of,
    member_roles,
    new_workspace,
    team,
)
from tests.factories import User, make_admin, register

COUNTED = ["members", "workspaces", "apps", "storageBytes", "records", "uploadsPerMonth"]


async def _plans(client: AsyncClient, admin: User) -> dict[str, dict[str, Any]]:
    """code → plan, as the admin list shows them."""
    page = data_of(await client.get("/api/v1/admin/plans?pageSize=100", headers=admin.headers))
    return {p["code"]: p for p in page["list"]}


async def _create_plan(client: AsyncClient, admin: User, **body: Any) -> str:
    body = {"code": "pro", "name": "Pro", **body}
    plan_id: str = data_of(
        await client.post("/api/v1/admin/plans", json=body, headers=admin.headers)
    )["id"]
    return plan_id


async def _move(client: AsyncClient, admin: User, workspace_id: str, plan_id: str) -> None:
    response = await client.put(
        f"/api/v1/admin/workspaces/{workspace_id}/plan",
        json={"planId": plan_id},
        headers=admin.headers,
    )
    assert data_of(response) == {"id": workspace_id, "planId": plan_id}


def _usage(plans: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {u["quota"]: u for u in plans["usage"]}


async def test_user_plans_shows_plan_usage_and_public_plans(client: AsyncClient) -> None:
    user = await register(client)
    plans = data_of(await client.get("/api/v1/user/plans", headers=user.headers))
    current = plans["currentPlan"]
    assert current["code"] == "free"
    assert current["isDefault"] == 1
    assert current["isPublic"] == 1
    assert current["quotas"] == FREE_PLAN_QUOTAS
    assert current["createdTime"].endswith("Z")
    usage = _usage(plans)
    assert [u["quota"] for u in plans["usage"]] == [*COUNTED, "callsPerMonth"]
    assert usage["members"] == {
        "quota": "members",
        "limit": 5,
        "used": 1,
        "warning": 0,
        "resetTime": None,
    }
    assert usage["workspaces"] == {
        "quota": "workspaces",
        "limit": 3,
        "used": 1,
        "warning": 0,
        "resetTime": None,
    }
    # Counted from what exists: a new account has no apps, records or stored bytes yet.
    for quota in ("apps", "records", "storageBytes", "uploadsPerMonth", "callsPerMonth"):
        assert usage[quota]["used"] == 0
    assert [p["code"] for p in plans["planList"]] == ["free"]


async def test_usage_warns_at_eighty_percent(client: AsyncClient) -> None:
    owner, workspace_id, _ = await team(client, "viewer", "viewer")
    headers = {**owner.headers, "X-Workspace-Id": workspace_id}
    usage = _usage(data_of(await client.get("/api/v1/user/plans", headers=headers)))
    assert (usage["members"]["used"], usage["members"]["warning"]) == (3, 0)
    await add_member(client, owner, workspace_id, await register(client), "viewer")
    usage = _usage(data_of(await client.get("/api/v1/user/plans", headers=headers)))
    assert (usage["members"]["used"], usage["members"]["warning"]) == (4, 1)
    # The owner owns their personal workspace and this one: 2 of 3, then 3 of 3.
    assert (usage["workspaces"]["used"], usage["workspaces"]["warning"]) == (2, 0)
    await new_workspace(client, owner, "third")
    usage = _usage(data_of(await client.get("/api/v1/user/plans", headers=headers)))
    assert (usage["workspaces"]["used"], usage["workspaces"]["warning"]) == (3, 1)


async def test_header_selects_the_workspace_whose_plan_is_shown(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    _owner, workspace_id, members = await team(client, "viewer")
    private_id = await _create_plan(
        client, admin, code="team-x", name="Team X", isPublic=False, quotas={"members": 50}
    )
    await _move(client, admin, workspace_id, private_id)
    viewer = members["viewer"]
    chosen = data_of(
        await client.get(
            "/api/v1/user/plans", headers={**viewer.headers, "X-Workspace-Id": workspace_id}
        )
    )
    assert chosen["currentPlan"]["id"] == private_id
    assert _usage(chosen)["members"]["limit"] == 50
    assert "team-x" not in [p["code"] for p in chosen["planList"]]  # private: not offered
    for headers in (viewer.headers, {**viewer.headers, "X-Workspace-Id": ""}):
        default = data_of(await client.get("/api/v1/user/plans", headers=headers))
        assert default["currentPlan"]["code"] == "free"


@pytest.mark.parametrize("header", ["OTHER", "01h00000000000000000000000", "bad id", "x" * 500])
async def test_workspace_header_of_others_or_malformed_is_404(
    client: AsyncClient, header: str
) -> None:
    _owner, workspace_id, _ = await team(client)
    intruder = await register(client)
    value = workspace_id if header == "OTHER" else header
    response = await client.get(
        "/api/v1/user/plans", headers={**intruder.headers, "X-Workspace-Id": value}
    )
    assert_error(response, 404, "workspace_not_found")


async def test_admin_creates_reads_and_lists_plans(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    plan_id = await _create_plan(
        client,
        admin,
        description="For teams",
        quotas={"members": 20, "storageBytes": 10 * 2**30, "apps": -1},
    )
    plan = data_of(await client.get(f"/api/v1/admin/plans/{plan_id}", headers=admin.headers))
    assert plan["code"] == "pro"
    assert plan["description"] == "For teams"
    assert plan["isDefault"] == 0
    assert plan["isPublic"] == 1
    assert plan["quotas"] == {
        **FREE_PLAN_QUOTAS,
        "members": 20,
        "storageBytes": 10 * 2**30,
        "apps": -1,
    }
    page = data_of(
        await client.get(
            "/api/v1/admin/plans?sort=code&order=desc&pageSize=1", headers=admin.headers
        )
    )
    assert (page["totalCount"], page["totalPage"]) == (2, 2)
    assert page["list"][0]["code"] == "pro"
    bad_sort = await client.get("/api/v1/admin/plans?sort=quotas", headers=admin.headers)
    assert_error(bad_sort, 400, "invalid_sort_field")


async def test_patch_merges_quotas_and_changes_fields(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    plan_id = await _create_plan(client, admin, quotas={"members": 20})
    response = await client.patch(
        f"/api/v1/admin/plans/{plan_id}",
        json={"name": SCRIPT, "code": "pro-2", "quotas": {"apps": 99}, "isPublic": "false"},
        headers=admin.headers,
    )
    plan = data_of(response)
    assert plan["name"] == SCRIPT
    assert plan["code"] == "pro-2"
    assert plan["isPublic"] == 0
    assert plan["quotas"] == {**FREE_PLAN_QUOTAS, "members": 20, "apps": 99}
    again = data_of(await client.get(f"/api/v1/admin/plans/{plan_id}", headers=admin.headers))
    assert again == plan


BAD_PLANS: list[tuple[dict[str, Any], int, str]] = [
    ({"code": "free", "name": "Again"}, 409, "plan_code_taken"),
    ({"code": "Pro", "name": "P"}, 400, "invalid_input"),
    ({"code": "-pro", "name": "P"}, 400, "invalid_input"),
    ({"code": "p", "name": "P"}, 400, "invalid_input"),
    ({"code": "p" * 41, "name": "P"}, 400, "invalid_input"),
    ({"code": INJECTION, "name": "P"}, 400, "invalid_input"),
    ({"code": "pro", "name": ""}, 400, "invalid_input"),
    ({"code": "pro"}, 400, "missing_parameters"),
    ({"code": "pro", "name": "P", "quotas": {"seats": 3}}, 400, "invalid_input"),
    ({"code": "pro", "name": "P", "quotas": {"members": -2}}, 400, "invalid_input"),
    ({"code": "pro", "name": "P", "quotas": {"members": 2**53}}, 400, "invalid_input"),
    ({"code": "pro", "name": "P", "quotas": {"members": "5"}}, 400, "invalid_input"),
    ({"code": "pro", "name": "P", "quotas": {"members": True}}, 400, "invalid_input"),
    ({"code": "pro", "name": "P", "quotas": {"members": 1.5}}, 400, "invalid_input"),
    ({"code": "pro", "name": "P", "quotas": {"members": None}}, 400, "invalid_input"),
    ({"code": "pro", "name": "P", "quotas": [1]}, 400, "invalid_input"),
    ({"code": "pro", "name": "P", "isDefault": "maybe"}, 400, "invalid_input"),
    ({"code": "pro", "name": "P", "id": "x"}, 400, "invalid_input"),
]


async def test_bad_plan_input_is_refused_and_creates_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    for body, status, reason in BAD_PLANS:
        response = await client.post("/api/v1/admin/plans", json=body, headers=admin.headers)
        data = assert_error(response, status, reason)
        assert status != 400 or data["errors"], body
    assert list(await _plans(client, admin)) == ["free"]


async def test_unknown_quota_names_the_field(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    response = await client.post(
        "/api/v1/admin/plans",
        json={"code": "pro", "name": "P", "quotas": {"seats": 3}},
        headers=admin.headers,
    )
    assert assert_error(response, 400, "invalid_input")["errors"] == [
        {"field": "quotas.seats", "message": "is not a known field"}
    ]


async def test_bad_patch_changes_nothing(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    plan_id = await _create_plan(client, admin)
    before = data_of(await client.get(f"/api/v1/admin/plans/{plan_id}", headers=admin.headers))
    path = f"/api/v1/admin/plans/{plan_id}"
    for body, status, reason in [
        ({"code": "free"}, 409, "plan_code_taken"),
        ({"name": "ok", "quotas": {"members": -5}}, 400, "invalid_input"),
        ({"quotas": {"nope": 1}}, 400, "invalid_input"),
        ({"name": "x" * 101}, 400, "invalid_input"),
        ({"createdTime": "2020-01-01T00:00:00Z"}, 400, "invalid_input"),
    ]:
        assert_error(await client.patch(path, json=body, headers=admin.headers), status, reason)
    malformed = await client.patch(
        path, content=b"{nope", headers={**admin.headers, "Content-Type": "application/json"}
    )
    assert_error(malformed, 400, "malformed_json")
    assert data_of(await client.get(path, headers=admin.headers)) == before


async def test_plan_text_is_stored_as_plain_data(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    plan_id = await _create_plan(client, admin, name=INJECTION, description=SCRIPT)
    plan = data_of(await client.get(f"/api/v1/admin/plans/{plan_id}", headers=admin.headers))
    assert (plan["name"], plan["description"]) == (INJECTION, SCRIPT)


async def test_exactly_one_default_plan(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    pro_id = await _create_plan(client, admin, isDefault=True, quotas={"members": 9})
    plans = await _plans(client, admin)
    assert (plans["free"]["isDefault"], plans["pro"]["isDefault"]) == (0, 1)
    newcomer = await register(client)
    mine = data_of(await client.get("/api/v1/user/plans", headers=newcomer.headers))
    assert mine["currentPlan"]["id"] == pro_id

    unset = await client.patch(
        f"/api/v1/admin/plans/{pro_id}", json={"isDefault": 0}, headers=admin.headers
    )
    assert_error(unset, 409, "default_plan_required")
    back = await client.patch(
        f"/api/v1/admin/plans/{plans['free']['id']}",
        json={"isDefault": True},
        headers=admin.headers,
    )
    assert data_of(back)["isDefault"] == 1
    plans = await _plans(client, admin)
    assert [code for code, p in plans.items() if p["isDefault"]] == ["free"]


async def test_delete_refuses_default_and_used_plans(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    plans = await _plans(client, admin)
    free_path = f"/api/v1/admin/plans/{plans['free']['id']}"
    assert_error(await client.delete(free_path, headers=admin.headers), 409, "default_plan")
    pro_id = await _create_plan(client, admin)
    user = await register(client)
    await _move(client, admin, user.workspace_id, pro_id)
    in_use = await client.delete(f"/api/v1/admin/plans/{pro_id}", headers=admin.headers)
    assert assert_error(in_use, 409, "plan_in_use")["workspaceCount"] == 1
    assert set(await _plans(client, admin)) == {"free", "pro"}
    await _move(client, admin, user.workspace_id, plans["free"]["id"])
    deleted = await client.delete(f"/api/v1/admin/plans/{pro_id}", headers=admin.headers)
    assert data_of(deleted) == {"id": pro_id}
    gone = await client.get(f"/api/v1/admin/plans/{pro_id}", headers=admin.headers)
    assert_error(gone, 404, "plan_not_found")


@pytest.mark.parametrize("plan_id", ["01h00000000000000000000000", "nope", "x" * 200])
async def test_unknown_plan_ids_are_404(app: FastAPI, client: AsyncClient, plan_id: str) -> None:
    admin = await make_admin(app, client)
    path = f"/api/v1/admin/plans/{plan_id}"
    for response in [
        await client.get(path, headers=admin.headers),
        await client.patch(path, json={"name": "x"}, headers=admin.headers),
        await client.delete(path, headers=admin.headers),
    ]:
        assert_error(response, 404, "plan_not_found")
    moved = await client.put(
        f"/api/v1/admin/workspaces/{admin.workspace_id}/plan",
        json={"planId": plan_id},
        headers=admin.headers,
    )
    if len(plan_id) > 64:  # an id that long is not an id: refused as input
        assert_error(moved, 400, "invalid_input")
    else:
        assert_error(moved, 404, "plan_not_found")
    assert list(await _plans(client, admin)) == ["free"]


async def test_moving_a_workspace_changes_its_quotas(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    owner, workspace_id, _ = await team(client)
    solo_id = await _create_plan(client, admin, code="solo", name="Solo", quotas={"members": 1})
    await _move(client, admin, workspace_id, solo_id)
    listed = data_of(await client.get(f"/api/v1/workspaces/{workspace_id}", headers=owner.headers))
    assert listed["planId"] == solo_id
    guest = await register(client)
    refused = await client.post(
        f"/api/v1/workspaces/{workspace_id}/members",
        json={"email": guest.email, "role": "viewer"},
        headers=owner.headers,
    )
    assert assert_error(refused, 403, "quota_exceeded")["limit"] == 1
    unlimited_id = await _create_plan(
        client, admin, code="max", name="Max", quotas={"members": -1, "workspaces": -1}
    )
    await _move(client, admin, workspace_id, unlimited_id)
    await add_member(client, owner, workspace_id, guest, "viewer")
    assert guest.account_id in await member_roles(client, owner, workspace_id)
    headers = {**owner.headers, "X-Workspace-Id": workspace_id}
    usage = _usage(data_of(await client.get("/api/v1/user/plans", headers=headers)))
    assert usage["members"] == {
        "quota": "members",
        "limit": -1,
        "used": 2,
        "warning": 0,
        "resetTime": None,
    }


async def test_account_workspace_allowance_follows_its_personal_plan(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    unlimited_id = await _create_plan(
        client, admin, code="max", name="Max", quotas={"workspaces": -1}
    )
    await _move(client, admin, user.workspace_id, unlimited_id)
    for n in range(4):
        await new_workspace(client, user, f"w{n}")
    page = data_of(await client.get("/api/v1/workspaces", headers=user.headers))
    assert page["totalCount"] == 5


async def test_move_refusals(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    plans = await _plans(client, admin)
    free_id = plans["free"]["id"]
    for workspace_id in ["01h00000000000000000000000", "nope"]:
        response = await client.put(
            f"/api/v1/admin/workspaces/{workspace_id}/plan",
            json={"planId": free_id},
            headers=admin.headers,
        )
        assert_error(response, 404, "workspace_not_found")
    path = f"/api/v1/admin/workspaces/{user.workspace_id}/plan"
    for body in [{}, {"planId": 1}, {"planId": ""}, {"planId": free_id, "x": 1}]:
        assert (await client.put(path, json=body, headers=admin.headers)).status_code == 400
    not_admin = await client.put(path, json={"planId": free_id}, headers=user.headers)
    assert_error(not_admin, 403, "admin_required")


async def test_admin_routes_refuse_non_admins_and_change_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    plans = await _plans(client, admin)
    free = plans["free"]
    path = f"/api/v1/admin/plans/{free['id']}"
    for method, url, body in [
        ("GET", "/api/v1/admin/plans", None),
        ("POST", "/api/v1/admin/plans", {"code": "mine", "name": "Mine"}),
        ("GET", path, None),
        ("PATCH", path, {"quotas": {"members": -1}}),
        ("DELETE", path, None),
    ]:
        response = await client.request(method, url, json=body, headers=user.headers)
        assert_error(response, 403, "admin_required")
        anonymous = await client.request(method, url, json=body)
        assert_error(anonymous, 401, "unauthenticated")
    assert await _plans(client, admin) == plans
