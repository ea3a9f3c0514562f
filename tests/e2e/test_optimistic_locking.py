"""Optimistic locking on the management API: `version`, `ETag`, `If-Match` (412), required
preconditions (428), and concurrent writers never silently losing an update."""

import asyncio
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response

from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import create_key, subscribe
from tests.e2e._workspaces import add_member, assert_error, data_of, new_workspace
from tests.factories import make_admin, register

FIELDS = [{"name": "title", "type": "string"}]


def _version(response: Response) -> int:
    data = data_of(response)
    assert response.headers["ETag"] == f'"{data["version"]}"'
    version: int = data["version"]
    return version


async def test_an_app_answers_its_version_and_honours_if_match(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    path = f"/api/v1/apps/{app_id}"
    assert _version(await client.get(path, headers=user.headers)) == 1
    headers = {**user.headers, "If-Match": '"1"'}
    changed = await client.patch(path, json={"name": "Shop"}, headers=headers)
    assert _version(changed) == 2
    stale = await client.patch(path, json={"name": "Lost"}, headers=headers)
    assert assert_error(stale, 412, "precondition_failed")["version"] == 2
    for tag in ('W/"2"', '"two"', "2", '"0"', '"99999999999"', ""):
        refused = await client.patch(
            path, json={"name": "Lost"}, headers={**user.headers, "If-Match": tag}
        )
        assert_error(refused, 412, "precondition_failed")
    listed = await client.patch(
        path, json={"name": "Listed"}, headers={**user.headers, "If-Match": '"7", "2"'}
    )
    assert _version(listed) == 3
    anything = await client.patch(
        path, json={"name": "Any"}, headers={**user.headers, "If-Match": "*"}
    )
    assert _version(anything) == 4
    plain = await client.patch(path, json={"name": "Plain"}, headers=user.headers)
    assert _version(plain) == 5
    read = data_of(await client.get(path, headers=user.headers))
    assert (read["name"], read["version"]) == ("Plain", 5)


async def test_another_workspaces_resource_is_404_whatever_the_if_match(
    client: AsyncClient,
) -> None:
    alice, mallory = await register(client), await register(client)
    app_id = await new_app(client, alice.headers)
    for tag in ('"1"', '"2"', "*"):
        response = await client.patch(
            f"/api/v1/apps/{app_id}",
            json={"name": "x"},
            headers={**mallory.headers, "If-Match": tag},
        )
        assert_error(response, 404, "app_not_found")
    assert (
        data_of(await client.get(f"/api/v1/apps/{app_id}", headers=alice.headers))["version"] == 1
    )


async def test_concurrent_edits_with_one_version_let_exactly_one_win(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    api_id = await new_api(client, user.headers, app_id, "echo", price=10)
    path = f"/api/v1/apps/{app_id}/apis/{api_id}"
    headers = {**user.headers, "If-Match": '"1"'}
    responses = await asyncio.gather(
        *(client.patch(path, json={"name": f"n{i}"}, headers=headers) for i in range(10))
    )
    winners = [r for r in responses if r.status_code == 200]
    assert len(winners) == 1
    for loser in (r for r in responses if r.status_code != 200):
        assert loser.json()["data"]["error"] in ("precondition_failed", "concurrent_update")
    final = data_of(await client.get(path, headers=user.headers))
    assert (final["name"], final["version"]) == (data_of(winners[0])["name"], 2)


async def test_concurrent_edits_without_if_match_never_lose_one_silently(
    client: AsyncClient,
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    path = f"/api/v1/apps/{app_id}"
    responses = await asyncio.gather(
        *(
            client.patch(path, json={"description": f"d{i}"}, headers=user.headers)
            for i in range(10)
        )
    )
    won = [r for r in responses if r.status_code == 200]
    for lost in (r for r in responses if r.status_code != 200):
        assert_error(lost, 409, "concurrent_update")  # told, never silently overwritten
    final = data_of(await client.get(path, headers=user.headers))
    assert final["version"] == 1 + len(won)
    assert final["description"] in {data_of(r)["description"] for r in won}


async def test_replacing_a_dataset_needs_if_match(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    created = await client.post(
        "/api/v1/datasets",
        json={"appId": app_id, "name": "posts", "fields": FIELDS},
        headers=user.headers,
    )
    path = f"/api/v1/datasets/{data_of(created)['id']}"
    body: dict[str, Any] = {"name": "posts", "fields": []}
    assert_error(
        await client.put(path, json=body, headers=user.headers), 428, "precondition_required"
    )
    assert _version(await client.get(path, headers=user.headers)) == 1
    stale = await client.put(path, json=body, headers={**user.headers, "If-Match": '"2"'})
    assert_error(stale, 412, "precondition_failed")
    assert data_of(await client.get(path, headers=user.headers))["fields"][0]["name"] == "title"
    replaced = await client.put(path, json=body, headers={**user.headers, "If-Match": '"1"'})
    assert _version(replaced) == 2
    assert data_of(replaced)["fields"] == []


async def test_records_take_if_match_and_a_put_needs_a_precondition(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    created = await client.post(
        "/api/v1/datasets",
        json={"appId": app_id, "name": "posts", "fields": FIELDS},
        headers=user.headers,
    )
    base = f"/api/v1/datasets/{data_of(created)['id']}/records"
    record_id = data_of(await client.post(base, json={"title": "a"}, headers=user.headers))["id"]
    path = f"{base}/{record_id}"
    assert _version(await client.get(path, headers=user.headers)) == 1
    required = await client.put(path, json={"title": "b"}, headers=user.headers)
    assert_error(required, 428, "precondition_required")
    stale = await client.put(path, json={"title": "b"}, headers={**user.headers, "If-Match": '"5"'})
    assert assert_error(stale, 412, "precondition_failed")["version"] == 1
    replaced = await client.put(
        path, json={"title": "b"}, headers={**user.headers, "If-Match": '"1"'}
    )
    assert _version(replaced) == 2
    patched = await client.patch(
        path, json={"title": "c"}, headers={**user.headers, "If-Match": '"2"'}
    )
    assert _version(patched) == 3
    old = await client.patch(path, json={"title": "d"}, headers={**user.headers, "If-Match": '"2"'})
    assert_error(old, 412, "precondition_failed")
    by_body = await client.put(path, json={"title": "e", "version": 3}, headers=user.headers)
    assert _version(by_body) == 4
    assert data_of(await client.get(path, headers=user.headers))["title"] == "e"


async def test_every_updatable_resource_has_a_version(app: FastAPI, client: AsyncClient) -> None:
    owner, member = await register(client), await register(client)
    workspace_id = await new_workspace(client, owner)
    await add_member(client, owner, workspace_id, member, "viewer")
    app_id = await new_app(client, owner.headers, visibility="public")
    subscription_id = await subscribe(client, owner.headers, app_id)
    key_id, _ = await create_key(client, owner.headers, type="ws", role="viewer")
    admin = await make_admin(app, client)
    plan_id = data_of(await client.get("/api/v1/admin/plans", headers=admin.headers))["list"][0][
        "id"
    ]
    cases: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
        (
            f"/api/v1/workspaces/{workspace_id}",
            "/api/v1/workspaces/" + workspace_id,
            {"name": "T2"},
            owner.headers,
        ),
        ("/api/v1/user/profile", "/api/v1/user/profile", {"name": "Ada"}, owner.headers),
        (f"/api/v1/api-keys/{key_id}", f"/api/v1/api-keys/{key_id}", {"name": "k2"}, owner.headers),
        (
            f"/api/v1/subscriptions/{subscription_id}",
            f"/api/v1/subscriptions/{subscription_id}",
            {"enabled": False},
            owner.headers,
        ),
        (
            f"/api/v1/admin/plans/{plan_id}",
            f"/api/v1/admin/plans/{plan_id}",
            {"description": "d"},
            admin.headers,
        ),
        (
            f"/api/v1/admin/users/{member.account_id}",
            f"/api/v1/admin/users/{member.account_id}",
            {"status": "disabled"},
            admin.headers,
        ),
    ]
    for read_path, write_path, body, headers in cases:
        before = await client.get(read_path, headers=headers)
        version = _version(before)
        stale = await client.patch(
            write_path, json=body, headers={**headers, "If-Match": f'"{version + 1}"'}
        )
        assert_error(stale, 412, "precondition_failed")
        changed = await client.patch(
            write_path, json=body, headers={**headers, "If-Match": f'"{version}"'}
        )
        assert _version(changed) == version + 1, write_path
    member_path = f"/api/v1/workspaces/{workspace_id}/members/{member.account_id}"
    stale = await client.patch(
        member_path, json={"role": "editor"}, headers={**owner.headers, "If-Match": '"2"'}
    )
    assert_error(stale, 412, "precondition_failed")
    changed = await client.patch(
        member_path, json={"role": "editor"}, headers={**owner.headers, "If-Match": '"1"'}
    )
    assert _version(changed) == 2


async def test_an_empty_patch_keeps_the_version(client: AsyncClient) -> None:
    user = await register(client)
    key_id, _ = await create_key(client, user.headers, type="ws", role="viewer")
    path = f"/api/v1/api-keys/{key_id}"
    assert _version(await client.patch(path, json={}, headers=user.headers)) == 1
    assert _version(await client.patch(path, json={"name": "n"}, headers=user.headers)) == 2
