"""Workspaces under review: text every backend can store, and ownership transfer as a versioned
write (new ETags; of two concurrent transfers one wins, never two owners)."""

import asyncio

from httpx import AsyncClient

from tests.e2e._workspaces import assert_error, data_of, member_roles, team, workspaces_of

NUL = "Team\x00name"


async def test_a_workspace_name_with_nul_is_refused_and_nothing_changes(
    client: AsyncClient,
) -> None:
    owner, workspace_id, _ = await team(client)
    before = await workspaces_of(client, owner)

    created = await client.post("/api/v1/workspaces", json={"name": NUL}, headers=owner.headers)
    data = assert_error(created, 400, "invalid_input")
    assert data["errors"][0]["field"] == "name"
    renamed = await client.patch(
        f"/api/v1/workspaces/{workspace_id}", json={"name": NUL}, headers=owner.headers
    )
    assert_error(renamed, 400, "invalid_input")

    assert await workspaces_of(client, owner) == before


async def test_a_transfer_gives_the_workspace_and_both_members_new_versions(
    client: AsyncClient,
) -> None:
    owner, workspace_id, members = await team(client, "editor")
    editor = members["editor"]
    path = f"/api/v1/workspaces/{workspace_id}"
    before = await client.get(path, headers=owner.headers)
    old_tag = before.headers["ETag"]
    member_versions = {
        m["accountId"]: m["version"]
        for m in data_of(await client.get(f"{path}/members", headers=owner.headers))["list"]
    }

    moved = await client.post(
        f"{path}/transfer", json={"accountId": editor.account_id}, headers=owner.headers
    )
    assert data_of(moved)["ownerId"] == editor.account_id

    after = await client.get(path, headers=editor.headers)
    assert after.headers["ETag"] != old_tag
    assert data_of(after)["version"] == data_of(before)["version"] + 1
    for member in data_of(await client.get(f"{path}/members", headers=owner.headers))["list"]:
        assert member["version"] == member_versions[member["accountId"]] + 1
    # A rename made against the ETag read before the transfer is a stale write.
    stale = await client.patch(
        path, json={"name": "Stale"}, headers={**editor.headers, "If-Match": old_tag}
    )
    assert_error(stale, 412, "precondition_failed")


async def test_two_concurrent_transfers_leave_exactly_one_owner(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "editor", "viewer")
    path = f"/api/v1/workspaces/{workspace_id}/transfer"
    responses = await asyncio.gather(
        *(
            client.post(path, json={"accountId": member.account_id}, headers=owner.headers)
            for member in members.values()
        )
    )
    statuses = sorted(response.status_code for response in responses)
    assert statuses[0] == 200, [r.text for r in responses]
    assert statuses[1] in (403, 409), [r.text for r in responses]

    roles = await member_roles(client, owner, workspace_id)
    owners = [account for account, role in roles.items() if role == "owner"]
    assert len(owners) == 1, roles
    assert roles[owner.account_id] == "admin"
    workspace = data_of(
        await client.get(f"/api/v1/workspaces/{workspace_id}", headers=owner.headers)
    )
    assert workspace["ownerId"] == owners[0]
