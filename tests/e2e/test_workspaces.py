"""`/api/v1/workspaces`: listing, creation within the plan quota, rename, delete, transfer."""

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from apiforge.datasets.models import Record
from apiforge.datasets.sql import existing_indexes
from tests.e2e._apps import in_workspace
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import (
    INJECTION,
    SCRIPT,
    add_member,
    assert_error,
    data_of,
    member_roles,
    new_workspace,
    team,
    workspaces_of,
)
from tests.factories import register

TS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"


async def test_new_account_lists_its_personal_workspace_as_owner(client: AsyncClient) -> None:
    user = await register(client)
    page = data_of(await client.get("/api/v1/workspaces", headers=user.headers))
    assert page["totalCount"] == 1
    assert page["pageNo"] == 1
    [workspace] = page["list"]
    assert workspace["id"] == user.workspace_id
    assert workspace["personal"] == 1
    assert workspace["role"] == "owner"
    assert workspace["ownerId"] == user.account_id
    assert workspace["memberCount"] == 1
    plans = data_of(await client.get("/api/v1/user/plans", headers=user.headers))
    assert workspace["planId"] == plans["currentPlan"]["id"]
    assert workspace["createdTime"].endswith("Z")
    assert workspace["updatedTime"].endswith("Z")


async def test_created_workspace_is_owned_by_caller(client: AsyncClient) -> None:
    user = await register(client)
    workspace_id = await new_workspace(client, user, "  Research  ")
    workspace = data_of(
        await client.get(f"/api/v1/workspaces/{workspace_id}", headers=user.headers)
    )
    assert workspace["name"] == "Research"
    assert workspace["personal"] == 0
    assert workspace["role"] == "owner"
    assert workspace["memberCount"] == 1
    assert set(await member_roles(client, user, workspace_id)) == {user.account_id}


async def test_list_pages_and_sorts_by_whitelisted_fields(client: AsyncClient) -> None:
    user = await register(client)
    await new_workspace(client, user, "bravo")
    await new_workspace(client, user, "alpha")
    personal = (await workspaces_of(client, user))[user.workspace_id]["name"]
    assert personal.startswith("user")  # sorts after "alpha" and "bravo" in any collation
    for order, expected in [
        ("asc", ["alpha", "bravo", personal]),
        ("desc", [personal, "bravo", "alpha"]),
    ]:
        url = f"/api/v1/workspaces?sort=name&order={order}"
        by_name = data_of(await client.get(url, headers=user.headers))
        assert [w["name"] for w in by_name["list"]] == expected
    first = data_of(await client.get("/api/v1/workspaces?pageSize=1", headers=user.headers))
    assert first["totalCount"] == 3
    assert first["totalPage"] == 3
    assert first["list"][0]["personal"] == 1  # oldest first by default
    second = data_of(
        await client.get("/api/v1/workspaces?pageSize=1&pageNo=2", headers=user.headers)
    )
    assert second["list"][0]["name"] == "bravo"
    bad = await client.get("/api/v1/workspaces?sort=ownerId", headers=user.headers)
    assert_error(bad, 400, "invalid_sort_field")


async def test_workspace_quota_counts_owned_workspaces_only(client: AsyncClient) -> None:
    user = await register(client)
    # Membership of someone else's workspace does not use the caller's allowance.
    _owner, _other, _ = await team(client)
    await add_member(client, _owner, _other, user, "admin")
    await new_workspace(client, user, "two")
    await new_workspace(client, user, "three")
    refused = await client.post("/api/v1/workspaces", json={"name": "four"}, headers=user.headers)
    data = assert_error(refused, 403, "quota_exceeded")
    assert data["quota"] == "workspaces"
    assert data["limit"] == 3
    assert data["used"] == 3
    listed = await workspaces_of(client, user)
    assert len(listed) == 4
    assert "four" not in {w["name"] for w in listed.values()}


BAD_CREATES: list[tuple[dict[str, Any], str]] = [
    ({}, "missing_parameters"),
    ({"name": ""}, "invalid_input"),
    ({"name": "   "}, "invalid_input"),
    ({"name": None}, "invalid_input"),
    ({"name": 123}, "invalid_input"),
    ({"name": ["a"]}, "invalid_input"),
    ({"name": "x" * 101}, "invalid_input"),
    ({"name": "ok", "personal": 1}, "invalid_input"),
    ({"name": "ok", "ownerId": "01h0000000000000000000000a"}, "invalid_input"),
]


async def test_bad_create_input_is_400_and_creates_nothing(client: AsyncClient) -> None:
    user = await register(client)
    for body, reason in BAD_CREATES:
        response = await client.post("/api/v1/workspaces", json=body, headers=user.headers)
        assert assert_error(response, 400, reason)["errors"], body
    assert list(await workspaces_of(client, user)) == [user.workspace_id]


async def test_malformed_json_is_400_and_creates_nothing(client: AsyncClient) -> None:
    user = await register(client)
    response = await client.post(
        "/api/v1/workspaces",
        content=b'{"name": "x",',
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 400, "malformed_json")
    assert list(await workspaces_of(client, user)) == [user.workspace_id]


@pytest.mark.parametrize("name", [INJECTION, SCRIPT, "名前 ✓"])
async def test_names_are_stored_as_plain_data(client: AsyncClient, name: str) -> None:
    user = await register(client)
    workspace_id = await new_workspace(client, user, name)
    assert (await workspaces_of(client, user))[workspace_id]["name"] == name
    renamed = await client.patch(
        f"/api/v1/workspaces/{user.workspace_id}", json={"name": name}, headers=user.headers
    )
    assert data_of(renamed)["name"] == name


async def test_requests_without_credentials_are_401(client: AsyncClient) -> None:
    user = await register(client)
    for method, path in [
        ("GET", "/api/v1/workspaces"),
        ("POST", "/api/v1/workspaces"),
        ("GET", f"/api/v1/workspaces/{user.workspace_id}"),
        ("DELETE", f"/api/v1/workspaces/{user.workspace_id}"),
        ("GET", f"/api/v1/workspaces/{user.workspace_id}/members"),
    ]:
        response = await client.request(method, path, json={"name": "x"})
        assert_error(response, 401, "unauthenticated")
    assert list(await workspaces_of(client, user)) == [user.workspace_id]


async def test_rename_needs_admin(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "editor", "admin")
    path = f"/api/v1/workspaces/{workspace_id}"
    refused = await client.patch(path, json={"name": "Mine"}, headers=members["editor"].headers)
    data = assert_error(refused, 403, "insufficient_role")
    assert data["requiredRole"] == "admin"
    assert data["role"] == "editor"
    assert data_of(await client.get(path, headers=owner.headers))["name"] == "Team"
    renamed = await client.patch(path, json={"name": "Ours"}, headers=members["admin"].headers)
    assert data_of(renamed)["name"] == "Ours"
    assert data_of(renamed)["role"] == "admin"
    assert data_of(await client.get(path, headers=owner.headers))["name"] == "Ours"


async def test_rename_rejects_bad_input_and_keeps_name(client: AsyncClient) -> None:
    owner, workspace_id, _ = await team(client)
    path = f"/api/v1/workspaces/{workspace_id}"
    for body in [{}, {"name": ""}, {"name": None}, {"name": "x" * 101}, {"name": "a", "x": 1}]:
        assert (await client.patch(path, json=body, headers=owner.headers)).status_code == 400
    assert data_of(await client.get(path, headers=owner.headers))["name"] == "Team"


async def test_delete_needs_owner_and_removes_members(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "admin", "viewer")
    path = f"/api/v1/workspaces/{workspace_id}"
    refused = await client.delete(path, headers=members["admin"].headers)
    assert assert_error(refused, 403, "insufficient_role")["requiredRole"] == "owner"
    assert len(await member_roles(client, owner, workspace_id)) == 3
    assert data_of(await client.delete(path, headers=owner.headers)) == {"id": workspace_id}
    assert_error(await client.get(path, headers=owner.headers), 404, "workspace_not_found")
    assert workspace_id not in await workspaces_of(client, members["viewer"])
    assert workspace_id not in await workspaces_of(client, owner)


async def test_personal_workspace_cannot_be_deleted(client: AsyncClient) -> None:
    user = await register(client)
    response = await client.delete(f"/api/v1/workspaces/{user.workspace_id}", headers=user.headers)
    assert_error(response, 409, "personal_workspace")
    assert list(await workspaces_of(client, user)) == [user.workspace_id]


@pytest.mark.parametrize(
    "workspace_id",
    ["OTHER", "01h00000000000000000000000", "not-an-id", "x" * 300, "%27%20OR%201%3D1"],
)
async def test_other_tenants_and_unknown_ids_are_404_and_untouched(
    client: AsyncClient, workspace_id: str
) -> None:
    owner, team_id, _ = await team(client)
    intruder = await register(client)
    target = team_id if workspace_id == "OTHER" else workspace_id
    path = f"/api/v1/workspaces/{target}"
    headers = intruder.headers
    for response in [
        await client.get(path, headers=headers),
        await client.patch(path, json={"name": "pwned"}, headers=headers),
        await client.delete(path, headers=headers),
        await client.get(f"{path}/members", headers=headers),
        await client.post(
            f"{path}/members", json={"email": intruder.email, "role": "admin"}, headers=headers
        ),
        await client.patch(
            f"{path}/members/{owner.account_id}", json={"role": "viewer"}, headers=headers
        ),
        await client.delete(f"{path}/members/{owner.account_id}", headers=headers),
        await client.post(
            f"{path}/transfer", json={"accountId": intruder.account_id}, headers=headers
        ),
    ]:
        assert_error(response, 404, "workspace_not_found")
    workspace = data_of(await client.get(f"/api/v1/workspaces/{team_id}", headers=owner.headers))
    assert workspace["name"] == "Team"
    assert workspace["ownerId"] == owner.account_id
    assert await member_roles(client, owner, team_id) == {owner.account_id: "owner"}


async def test_transfer_hands_ownership_to_a_member(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "editor")
    heir = members["editor"]
    response = await client.post(
        f"/api/v1/workspaces/{workspace_id}/transfer",
        json={"accountId": heir.account_id},
        headers=owner.headers,
    )
    workspace = data_of(response)
    assert workspace["ownerId"] == heir.account_id
    assert workspace["role"] == "admin"
    assert await member_roles(client, heir, workspace_id) == {
        owner.account_id: "admin",
        heir.account_id: "owner",
    }
    path = f"/api/v1/workspaces/{workspace_id}"
    assert_error(await client.delete(path, headers=owner.headers), 403, "insufficient_role")
    assert data_of(await client.delete(path, headers=heir.headers)) == {"id": workspace_id}


async def test_transfer_refusals_change_nothing(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "admin")
    stranger = await register(client)
    path = f"/api/v1/workspaces/{workspace_id}/transfer"
    admin = members["admin"]
    cases = [
        (admin, {"accountId": admin.account_id}, 403, "insufficient_role"),
        (owner, {"accountId": stranger.account_id}, 404, "member_not_found"),
        (owner, {"accountId": "nope"}, 404, "member_not_found"),
        (owner, {"accountId": owner.account_id}, 409, "already_owner"),
    ]
    for actor, body, status, reason in cases:
        assert_error(await client.post(path, json=body, headers=actor.headers), status, reason)
    bad_bodies: list[dict[str, Any]] = [
        {},
        {"accountId": 5},
        {"accountId": ""},
        {"accountId": "a", "role": "x"},
    ]
    for bad in bad_bodies:
        assert (await client.post(path, json=bad, headers=owner.headers)).status_code == 400
    personal = await client.post(
        f"/api/v1/workspaces/{owner.workspace_id}/transfer",
        json={"accountId": admin.account_id},
        headers=owner.headers,
    )
    assert_error(personal, 409, "personal_workspace")
    assert await member_roles(client, owner, workspace_id) == {
        owner.account_id: "owner",
        admin.account_id: "admin",
    }


async def test_transfer_respects_the_new_owners_workspace_quota(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "admin")
    heir = members["admin"]
    await new_workspace(client, heir, "h2")
    await new_workspace(client, heir, "h3")
    response = await client.post(
        f"/api/v1/workspaces/{workspace_id}/transfer",
        json={"accountId": heir.account_id},
        headers=owner.headers,
    )
    assert assert_error(response, 403, "quota_exceeded")["quota"] == "workspaces"
    assert (await member_roles(client, owner, workspace_id))[owner.account_id] == "owner"


async def test_concurrent_creations_cannot_overshoot_the_workspaces_quota(
    client: AsyncClient,
) -> None:
    user = await register(client)
    await new_workspace(client, user, "two")  # 2 of 3 owned

    async def create(name: str) -> int:
        response = await client.post(
            "/api/v1/workspaces", json={"name": name}, headers=user.headers
        )
        return response.status_code

    statuses = await asyncio.gather(*(create(f"race{n}") for n in range(4)))
    assert sorted(statuses) == [200, 403, 403, 403]
    assert len(await workspaces_of(client, user)) == 3


async def test_a_workspace_whose_apps_others_use_is_deleted_only_with_force(
    client: AsyncClient,
) -> None:
    """Its apps go with it, and with them other workspaces' keys and records: 409 `app_in_use`
    (nothing deleted) unless asked for with `force`."""
    owner, workspace_id, _ = await team(client)
    consumer = await register(client)
    as_team = replace(owner, headers=in_workspace(owner, workspace_id))
    app_id = await notes_app(client, as_team, visibility="public")
    _key_id, secret = await app_key(client, consumer, app_id)
    path = f"/api/v1/workspaces/{workspace_id}"
    refused = await client.delete(path, headers=owner.headers)
    assert_error(refused, 409, "app_in_use")
    assert refused.json()["data"]["subscribers"] == 1
    assert data_of(await call(client, secret, app_id, "echo", {"text": "still"})) == {
        "echo": "still"
    }
    done = await client.delete(path + "?force=true", headers=owner.headers)
    assert data_of(done) == {"id": workspace_id}
    assert_error(await call(client, secret, app_id, "echo", {"text": "x"}), 404, "app_not_found")


async def test_deleting_a_workspace_takes_what_its_cascade_misses(
    app: FastAPI, client: AsyncClient
) -> None:
    """Records it wrote as a caller of another workspace's app (no foreign key: left behind they
    were unreadable, yet held that collection's fields against type changes), and the run-time
    indexes of its own collections (as deleting an app drops them)."""
    builder = await register(client)
    owner, workspace_id, _ = await team(client)
    in_team = replace(owner, workspace_id=workspace_id, headers=in_workspace(owner, workspace_id))
    other_app = await notes_app(client, builder, visibility="public")
    _, secret = await app_key(client, in_team, other_app)
    data_of(await call(client, secret, other_app, "addNote", {"text": "the team's note"}))
    own_app = await notes_app(client, in_team)  # its `notes` collection
    fields = [{"name": "sku", "type": "string", "unique": True}]
    body = {"appId": own_app, "name": "items", "fields": fields}
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=in_team.headers))[
        "id"
    ]
    async with app.state.engine.connect() as conn:
        assert len(await existing_indexes(conn, dataset_id)) == 1
        query = select(func.count()).where(Record.partition == workspace_id)
        assert (await conn.execute(query)).scalar_one() == 1

    gone = await client.delete(f"/api/v1/workspaces/{workspace_id}", headers=owner.headers)
    assert data_of(gone) == {"id": workspace_id}
    async with app.state.engine.connect() as conn:
        assert await existing_indexes(conn, dataset_id) == set()
        assert (await conn.execute(query)).scalar_one() == 0
