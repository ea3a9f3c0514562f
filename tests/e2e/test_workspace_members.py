"""`/api/v1/workspaces/{id}/members`: adding, role changes and removal under the rank rules."""

import asyncio
from typing import Any

import pytest
from httpx import AsyncClient

from tests.e2e._workspaces import (
    INJECTION,
    SCRIPT,
    add_member,
    assert_error,
    data_of,
    member_roles,
    team,
    workspaces_of,
)
from tests.factories import register


async def test_admin_adds_member_by_email_and_both_see_it(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "admin")
    newcomer = await register(client, name="Newcomer")
    response = await client.post(
        f"/api/v1/workspaces/{workspace_id}/members",
        json={"email": newcomer.email.upper(), "role": "editor"},
        headers=members["admin"].headers,
    )
    assert data_of(response) == {"id": newcomer.account_id}
    page = data_of(
        await client.get(f"/api/v1/workspaces/{workspace_id}/members", headers=newcomer.headers)
    )
    assert page["totalCount"] == 3
    listed = {m["accountId"]: m for m in page["list"]}
    assert listed[newcomer.account_id]["email"] == newcomer.email
    assert listed[newcomer.account_id]["name"] == "Newcomer"
    assert listed[newcomer.account_id]["role"] == "editor"
    assert listed[newcomer.account_id]["createdTime"].endswith("Z")
    assert page["list"][0]["accountId"] == owner.account_id  # oldest membership first
    mine = (await workspaces_of(client, newcomer))[workspace_id]
    assert mine["role"] == "editor"
    assert mine["memberCount"] == 3


async def test_member_list_sorts_by_whitelist(client: AsyncClient) -> None:
    owner, workspace_id, _ = await team(client, "viewer", "editor")
    path = f"/api/v1/workspaces/{workspace_id}/members"
    page = data_of(await client.get(f"{path}?sort=email&order=asc", headers=owner.headers))
    emails = [m["email"] for m in page["list"]]
    assert emails == sorted(emails)
    assert_error(
        await client.get(f"{path}?sort=role", headers=owner.headers), 400, "invalid_sort_field"
    )
    paged = data_of(await client.get(f"{path}?pageSize=2&pageNo=2", headers=owner.headers))
    assert paged["totalPage"] == 2
    assert len(paged["list"]) == 1


ADD_REFUSALS: list[tuple[dict[str, Any], int, str]] = [
    ({"email": "nobody@example.com", "role": "viewer"}, 404, "account_not_found"),
    ({"email": "EXISTING", "role": "viewer"}, 409, "already_member"),
    ({"email": "NEW", "role": "owner"}, 400, "owner_not_grantable"),
    ({"email": "NEW", "role": "superuser"}, 400, "invalid_input"),
    ({"email": "NEW", "role": 3}, 400, "invalid_input"),
    ({"email": INJECTION, "role": "viewer"}, 400, "invalid_input"),
    ({"email": SCRIPT, "role": "viewer"}, 400, "invalid_input"),
    ({"email": "x" * 250 + "@e.com", "role": "viewer"}, 400, "invalid_input"),
    ({"email": "NEW"}, 400, "missing_parameters"),
    ({"email": "NEW", "role": "viewer", "accountId": "x"}, 400, "invalid_input"),
]


async def test_add_member_refusals_change_nothing(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "viewer")
    newcomer = await register(client)
    email = {"EXISTING": members["viewer"].email, "NEW": newcomer.email}
    before = await member_roles(client, owner, workspace_id)
    path = f"/api/v1/workspaces/{workspace_id}/members"
    for body, status, reason in ADD_REFUSALS:
        sent = {**body, "email": email.get(body["email"], body["email"])}
        response = await client.post(path, json=sent, headers=owner.headers)
        assert_error(response, status, reason)
    malformed = await client.post(
        path, content=b'{"email": ', headers={**owner.headers, "Content-Type": "application/json"}
    )
    assert_error(malformed, 400, "malformed_json")
    assert await member_roles(client, owner, workspace_id) == before


@pytest.mark.parametrize("role", ["viewer", "editor"])
async def test_below_admin_cannot_add_members(client: AsyncClient, role: str) -> None:
    owner, workspace_id, members = await team(client, role)
    newcomer = await register(client)
    response = await client.post(
        f"/api/v1/workspaces/{workspace_id}/members",
        json={"email": newcomer.email, "role": "viewer"},
        headers=members[role].headers,
    )
    data = assert_error(response, 403, "insufficient_role")
    assert data["requiredRole"] == "admin"
    assert newcomer.account_id not in await member_roles(client, owner, workspace_id)


async def test_members_quota_of_the_plan_is_enforced(client: AsyncClient) -> None:
    owner, workspace_id, _ = await team(client, "viewer", "viewer", "editor")
    await add_member(client, owner, workspace_id, await register(client), "viewer")  # 5 of 5
    extra = await register(client)
    response = await client.post(
        f"/api/v1/workspaces/{workspace_id}/members",
        json={"email": extra.email, "role": "viewer"},
        headers=owner.headers,
    )
    data = assert_error(response, 403, "quota_exceeded")
    assert (data["quota"], data["limit"], data["used"]) == ("members", 5, 5)
    assert extra.account_id not in await member_roles(client, owner, workspace_id)


async def _patch_role(
    client: AsyncClient,
    actor_headers: dict[str, str],
    workspace_id: str,
    account_id: str,
    role: Any,
) -> Any:
    return await client.patch(
        f"/api/v1/workspaces/{workspace_id}/members/{account_id}",
        json={"role": role},
        headers=actor_headers,
    )


async def test_role_changes_follow_rank_rules(client: AsyncClient) -> None:
    owner, workspace_id, m = await team(client, "admin", "editor", "viewer")
    admin2 = await register(client)
    await add_member(client, owner, workspace_id, admin2, "admin")
    admin = m["admin"]
    promoted = await _patch_role(
        client, admin.headers, workspace_id, m["viewer"].account_id, "admin"
    )
    assert data_of(promoted)["role"] == "admin"
    assert data_of(promoted)["accountId"] == m["viewer"].account_id
    demoted = await _patch_role(client, owner.headers, workspace_id, admin2.account_id, "viewer")
    assert data_of(demoted)["role"] == "viewer"
    expected = {
        owner.account_id: "owner",
        admin.account_id: "admin",
        m["editor"].account_id: "editor",
        m["viewer"].account_id: "admin",
        admin2.account_id: "viewer",
    }
    assert await member_roles(client, owner, workspace_id) == expected


async def test_role_change_refusals_change_nothing(client: AsyncClient) -> None:
    owner, workspace_id, m = await team(client, "admin", "editor", "viewer")
    peer = await register(client)
    await add_member(client, owner, workspace_id, peer, "admin")
    stranger = await register(client)
    before = await member_roles(client, owner, workspace_id)
    admin, editor = m["admin"], m["editor"]
    cases = [
        # an admin cannot touch another admin (needs to outrank them) nor themselves
        (admin, peer.account_id, "viewer", 403, "insufficient_role"),
        (admin, admin.account_id, "viewer", 403, "insufficient_role"),
        # nobody changes the owner's role, the owner included
        (admin, owner.account_id, "viewer", 409, "owner_role_immutable"),
        (owner, owner.account_id, "admin", 409, "owner_role_immutable"),
        # owner is never assigned, not even by the owner
        (owner, editor.account_id, "owner", 400, "owner_not_grantable"),
        (admin, editor.account_id, "owner", 400, "owner_not_grantable"),
        # below admin: no role changes at all
        (editor, m["viewer"].account_id, "editor", 403, "insufficient_role"),
        (m["viewer"], m["viewer"].account_id, "admin", 403, "insufficient_role"),
        # not a member / not an id
        (owner, stranger.account_id, "viewer", 404, "member_not_found"),
        (owner, "bogus", "viewer", 404, "member_not_found"),
        # bad values
        (owner, editor.account_id, "root", 400, "invalid_input"),
        (owner, editor.account_id, None, 400, "invalid_input"),
        (owner, editor.account_id, ["admin"], 400, "invalid_input"),
    ]
    for actor, target, role, status, reason in cases:
        response = await _patch_role(client, actor.headers, workspace_id, target, role)
        assert_error(response, status, reason)
    assert await member_roles(client, owner, workspace_id) == before
    peer_refusal = await _patch_role(client, admin.headers, workspace_id, peer.account_id, "editor")
    assert assert_error(peer_refusal, 403, "insufficient_role")["requiredRole"] == "owner"


async def test_removal_follows_rank_rules(client: AsyncClient) -> None:
    owner, workspace_id, m = await team(client, "admin", "editor", "viewer")
    peer = await register(client)
    await add_member(client, owner, workspace_id, peer, "admin")
    path = f"/api/v1/workspaces/{workspace_id}/members"
    admin, editor, viewer = m["admin"], m["editor"], m["viewer"]
    refusals = [
        (admin, peer.account_id, 403, "insufficient_role"),
        (admin, owner.account_id, 409, "owner_cannot_be_removed"),
        (editor, viewer.account_id, 403, "insufficient_role"),
        (viewer, editor.account_id, 403, "insufficient_role"),
        (owner, owner.account_id, 409, "owner_cannot_leave"),
        (owner, "nope", 404, "member_not_found"),
        (owner, (await register(client)).account_id, 404, "member_not_found"),
    ]
    before = await member_roles(client, owner, workspace_id)
    for actor, target, status, reason in refusals:
        response = await client.delete(f"{path}/{target}", headers=actor.headers)
        assert_error(response, status, reason)
    assert await member_roles(client, owner, workspace_id) == before

    removed = await client.delete(f"{path}/{editor.account_id}", headers=admin.headers)
    assert data_of(removed) == {"id": editor.account_id}
    assert data_of(await client.delete(f"{path}/{peer.account_id}", headers=owner.headers))
    assert workspace_id not in await workspaces_of(client, editor)
    gone = await client.get(f"/api/v1/workspaces/{workspace_id}", headers=editor.headers)
    assert_error(gone, 404, "workspace_not_found")
    assert set(await member_roles(client, owner, workspace_id)) == {
        owner.account_id,
        admin.account_id,
        viewer.account_id,
    }


@pytest.mark.parametrize("role", ["viewer", "editor", "admin"])
async def test_any_member_but_the_owner_can_leave(client: AsyncClient, role: str) -> None:
    owner, workspace_id, members = await team(client, role)
    leaver = members[role]
    response = await client.delete(
        f"/api/v1/workspaces/{workspace_id}/members/{leaver.account_id}", headers=leaver.headers
    )
    assert data_of(response) == {"id": leaver.account_id}
    assert await member_roles(client, owner, workspace_id) == {owner.account_id: "owner"}
    assert list(await workspaces_of(client, leaver)) == [leaver.workspace_id]


async def test_member_of_b_cannot_reach_a_through_its_own_workspace_path(
    client: AsyncClient,
) -> None:
    owner_a, workspace_a, _ = await team(client, "viewer")
    owner_b, workspace_b, _ = await team(client)
    # Managing A's owner through B's path: the member lookup is scoped to B.
    response = await client.delete(
        f"/api/v1/workspaces/{workspace_b}/members/{owner_a.account_id}", headers=owner_b.headers
    )
    assert_error(response, 404, "member_not_found")
    patched = await _patch_role(client, owner_b.headers, workspace_b, owner_a.account_id, "viewer")
    assert_error(patched, 404, "member_not_found")
    assert (await member_roles(client, owner_a, workspace_a))[owner_a.account_id] == "owner"


async def test_concurrent_additions_cannot_overshoot_the_members_quota(
    client: AsyncClient,
) -> None:
    owner, workspace_id, _ = await team(client, "viewer", "viewer", "viewer")  # 4 of 5
    newcomers = [await register(client) for _ in range(4)]

    async def add(email: str) -> int:
        response = await client.post(
            f"/api/v1/workspaces/{workspace_id}/members",
            json={"email": email, "role": "viewer"},
            headers=owner.headers,
        )
        return response.status_code

    statuses = await asyncio.gather(*(add(user.email) for user in newcomers))
    assert sorted(statuses) == [200, 403, 403, 403]
    assert len(await member_roles(client, owner, workspace_id)) == 5


async def test_a_workspace_key_cannot_change_who_belongs(client: AsyncClient) -> None:
    # A leaked admin `ws-` key must not enrol an account that keeps its access once the key is
    # revoked, nor change roles, remove people or hand the workspace over; reading is fine.
    from tests.e2e._keys import create_key

    owner, workspace_id, members = await team(client, "editor")
    editor = members["editor"]
    _, secret = await create_key(
        client, {**owner.headers, "X-Workspace-Id": workspace_id}, type="ws", role="admin"
    )
    key = {"X-Api-Key": secret}
    outsider = await register(client)
    base = f"/api/v1/workspaces/{workspace_id}"
    before = await member_roles(client, owner, workspace_id)
    for response in (
        await client.post(
            f"{base}/members", json={"email": outsider.email, "role": "admin"}, headers=key
        ),
        await client.patch(
            f"{base}/members/{editor.account_id}", json={"role": "admin"}, headers=key
        ),
        await client.delete(f"{base}/members/{editor.account_id}", headers=key),
        await client.delete(f"{base}/members/{owner.account_id}", headers=key),
        await client.post(f"{base}/transfer", json={"accountId": editor.account_id}, headers=key),
    ):
        assert_error(response, 403, "workspace_key_not_allowed")
    assert await member_roles(client, owner, workspace_id) == before
    listed = await client.get(f"{base}/members?pageSize=100", headers=key)
    assert {m["accountId"] for m in data_of(listed)["list"]} == set(before)
    # The owner, signed in, still can.
    await add_member(client, owner, workspace_id, outsider, "viewer")
