"""A stored management answer is replayed only to a caller the route would still serve: once a
member is removed from a workspace, their retries there are refused like any other request
(404 `workspace_not_found`), not answered from the store — for a ws- key of theirs too."""

from httpx import AsyncClient

from tests.e2e._keys import create_key
from tests.e2e._workspaces import assert_error, data_of, team


async def test_a_removed_member_gets_no_replay_in_that_workspace(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "admin")
    admin = members["admin"]
    in_team = {**admin.headers, "X-Workspace-Id": workspace_id, "Idempotency-Key": "app-1"}
    first = await client.post("/api/v1/apps", json={"name": "Team app"}, headers=in_team)
    assert first.status_code == 200, first.text
    again = await client.post("/api/v1/apps", json={"name": "Team app"}, headers=in_team)
    assert again.headers.get("Idempotent-Replayed") == "1"  # while a member: replayed

    key_headers = {**admin.headers, "X-Workspace-Id": workspace_id}
    _key_id, secret = await create_key(client, key_headers, type="ws", role="admin")
    by_key = {"X-Api-Key": secret, "Idempotency-Key": "app-2"}
    made = await client.post("/api/v1/apps", json={"name": "Key app"}, headers=by_key)
    assert made.status_code == 200, made.text

    removed = await client.delete(
        f"/api/v1/workspaces/{workspace_id}/members/{admin.account_id}", headers=owner.headers
    )
    assert removed.status_code == 200, removed.text
    after = await client.post("/api/v1/apps", json={"name": "Team app"}, headers=in_team)
    assert_error(after, 404, "workspace_not_found")
    assert "Idempotent-Replayed" not in after.headers
    # The key acts for its creator, who is no longer a member: refused, not replayed.
    keyed = await client.post("/api/v1/apps", json={"name": "Key app"}, headers=by_key)
    assert keyed.status_code in (401, 403, 404), keyed.text
    assert "Idempotent-Replayed" not in keyed.headers
    listed = data_of(
        await client.get("/api/v1/apps", headers={**owner.headers, "X-Workspace-Id": workspace_id})
    )
    assert sorted(a["name"] for a in listed["list"]) == ["Key app", "Team app"]
