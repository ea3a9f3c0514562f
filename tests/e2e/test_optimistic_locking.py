"""Optimistic locking on the management API: `version`, `ETag`, `If-Match` (412, on writes and
deletes), required preconditions (428), and concurrent writers never silently losing an update."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.datasets import service as datasets_service
from apiforge.datasets.store import RecordStore
from apiforge.workspaces import service as workspaces_service
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import create_key, subscribe
from tests.e2e._workspaces import add_member, assert_error, data_of, new_workspace
from tests.factories import User, make_admin, register

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


async def _record(client: AsyncClient, user: User) -> str:
    """A new record's path (in a new dataset of a new app)."""
    app_id = await new_app(client, user.headers)
    created = await client.post(
        "/api/v1/datasets",
        json={"appId": app_id, "name": "posts", "fields": FIELDS},
        headers=user.headers,
    )
    base = f"/api/v1/datasets/{data_of(created)['id']}/records"
    record_id = data_of(await client.post(base, json={"title": "a"}, headers=user.headers))["id"]
    return f"{base}/{record_id}"


async def test_a_record_write_refuses_a_stale_body_version_whatever_the_if_match(
    client: AsyncClient,
) -> None:
    user = await register(client)
    path = await _record(client, user)
    assert _version(await client.patch(path, json={"title": "b"}, headers=user.headers)) == 2
    current, stale = {**user.headers, "If-Match": '"2"'}, {**user.headers, "If-Match": '"1"'}
    for method in ("PUT", "PATCH"):
        refused = await client.request(
            method, path, json={"title": "lost", "version": 1}, headers=current
        )
        assert assert_error(refused, 409, "version_conflict")["currentVersion"] == 2
        # Both stale: If-Match is the precondition, evaluated first (412).
        both = await client.request(
            method, path, json={"title": "lost", "version": 1}, headers=stale
        )
        assert_error(both, 412, "precondition_failed")
        wrong_header = await client.request(
            method, path, json={"title": "lost", "version": 2}, headers=stale
        )
        assert_error(wrong_header, 412, "precondition_failed")
    read = data_of(await client.get(path, headers=user.headers))
    assert (read["title"], read["version"]) == ("b", 2)
    agreed = await client.put(path, json={"title": "c", "version": 2}, headers=current)
    assert _version(agreed) == 3
    anything = await client.put(
        path, json={"title": "d", "version": 3}, headers={**user.headers, "If-Match": "*"}
    )
    assert _version(anything) == 4


async def test_if_match_is_a_strong_comparison_of_the_exact_tag(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    path = f"/api/v1/apps/{app_id}"
    for tag in ('"01"', '"+1"', '" 1"', '"1 "', '"1.0"', 'W/"1"', '"01", W/"1"'):
        refused = await client.patch(
            path, json={"name": "Lost"}, headers={**user.headers, "If-Match": tag}
        )
        assert_error(refused, 412, "precondition_failed")
    record = await _record(client, user)
    refused = await client.put(
        record, json={"title": "x"}, headers={**user.headers, "If-Match": '"01"'}
    )
    assert_error(refused, 412, "precondition_failed")
    listed = await client.patch(
        path, json={"name": "Kept"}, headers={**user.headers, "If-Match": '"01", "1"'}
    )
    assert _version(listed) == 2


async def test_a_delete_honours_if_match_on_every_resource_with_an_etag(
    app: FastAPI, client: AsyncClient
) -> None:
    owner, member, victim = await register(client), await register(client), await register(client)
    workspace_id = await new_workspace(client, owner)
    await add_member(client, owner, workspace_id, member, "viewer")
    app_id = await new_app(client, owner.headers, visibility="public")
    api_id = await new_api(client, owner.headers, app_id, "echo", price=10)
    record = await _record(client, owner)
    dataset = record.split("/records/")[0]
    subscription_id = await subscribe(client, owner.headers, app_id)
    key_id, _ = await create_key(client, owner.headers, type="ws", role="viewer")
    admin = await make_admin(app, client)
    plan = await client.post(
        "/api/v1/admin/plans", json={"code": "gold", "name": "Gold"}, headers=admin.headers
    )
    uploaded = await client.post(
        "/api/v1/files", files={"file": ("a.txt", b"abc", "text/plain")}, headers=owner.headers
    )
    file_id = data_of(uploaded)["id"]
    apis, members = f"/api/v1/apps/{app_id}/apis", f"/api/v1/workspaces/{workspace_id}/members"
    cases: list[tuple[str, dict[str, str]]] = [  # children before their parents
        (record, owner.headers),
        (dataset, owner.headers),
        (f"{apis}/{api_id}", owner.headers),
        (f"/api/v1/subscriptions/{subscription_id}", owner.headers),
        (f"/api/v1/apps/{app_id}", owner.headers),
        (f"/api/v1/api-keys/{key_id}", owner.headers),
        (f"/api/v1/admin/plans/{data_of(plan)['id']}", admin.headers),
        (f"/api/v1/admin/users/{victim.account_id}", admin.headers),
        (f"{members}/{member.account_id}", owner.headers),
        (f"/api/v1/workspaces/{workspace_id}", owner.headers),
        (f"/api/v1/files/{file_id}", owner.headers),  # its ETag is its bytes' md5
    ]
    for path, headers in cases:
        read = members if path.startswith(members) else path  # a member shows in the list only
        before = await client.get(read, headers=headers)
        assert before.status_code == 200, read
        if read == members:
            listed = {m["accountId"]: m["version"] for m in data_of(before)["list"]}
            tag = f'"{listed[member.account_id]}"'
        else:
            tag = before.headers["ETag"]
        for other in ('"99"', f"W/{tag}", f'"0{tag[1:]}', '"abc"'):
            refused = await client.delete(path, headers={**headers, "If-Match": other})
            assert_error(refused, 412, "precondition_failed")
        after = await client.get(read, headers=headers)
        assert (after.status_code, after.content) == (200, before.content), read  # untouched
        deleted = await client.delete(path, headers={**headers, "If-Match": f'"7", {tag}'})
        assert deleted.status_code == 200, (path, deleted.text)
        gone = await client.get(read, headers=headers)
        if "/api-keys/" in read:  # revoked, not removed: a new state, a new version
            assert (data_of(gone)["status"], gone.headers["ETag"]) == ("revoked", '"2"')
        elif read == members:
            assert member.account_id not in {m["accountId"] for m in data_of(gone)["list"]}
        else:
            assert gone.status_code == 404, read
    wildcard = await _record(client, owner)
    assert (await client.delete(wildcard, headers={**owner.headers, "If-Match": "*"})).is_success
    absent = await client.delete(wildcard, headers={**owner.headers, "If-Match": "*"})
    assert_error(absent, 404, "record_not_found")


async def test_a_record_delete_takes_if_match_and_a_version_query_together(
    client: AsyncClient,
) -> None:
    user = await register(client)
    path = await _record(client, user)
    await client.patch(path, json={"title": "b"}, headers=user.headers)
    current = {**user.headers, "If-Match": '"2"'}
    stale_query = await client.delete(f"{path}?version=1", headers=current)
    assert_error(stale_query, 409, "version_conflict")
    stale_header = await client.delete(
        f"{path}?version=2", headers={**user.headers, "If-Match": '"1"'}
    )
    assert_error(stale_header, 412, "precondition_failed")
    assert (await client.delete(f"{path}?version=2", headers=current)).status_code == 200
    assert (await client.get(path, headers=user.headers)).status_code == 404


def _write_before(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, write: Callable[[], Awaitable[Response]]
) -> list[Response]:
    """Run `write` (another request, committed on its own) once, just before `owner.name` runs:
    between a DELETE's If-Match check and its statement."""
    original = getattr(owner, name)
    written: list[Response] = []
    started: list[bool] = []  # `write` may call `owner.name` too: run it once all the same

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not started:
            started.append(True)
            written.append(await write())
        return await original(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return written


async def test_a_write_between_a_deletes_check_and_its_statement_wins(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DELETE is conditional on the version it checked: the record store's, the ORM's
    (a dataset) and the one-statement DELETE's (a workspace) each lose to a concurrent write."""
    user = await register(client)
    record = await _record(client, user)
    checked = {**user.headers, "If-Match": '"1"'}
    written = _write_before(
        monkeypatch,
        RecordStore,
        "delete",
        lambda: client.patch(record, json={"title": "new"}, headers=checked),
    )
    assert_error(await client.delete(record, headers=checked), 409, "version_conflict")
    assert _version(written[0]) == 2
    assert data_of(await client.get(record, headers=user.headers))["title"] == "new"

    dataset = record.split("/records/")[0]
    body = {"name": "renamed", "fields": FIELDS}
    # The app's row is locked before the deletion's checks, as for the workspace below: the
    # write lands before that lock, after the If-Match check.
    written = _write_before(
        monkeypatch,
        datasets_service,
        "find_app",
        lambda: client.put(dataset, json=body, headers=checked),
    )
    assert_error(await client.delete(dataset, headers=checked), 409, "concurrent_update")
    assert _version(written[0]) == 2
    assert data_of(await client.get(record, headers=user.headers))["title"] == "new"

    workspace = f"/api/v1/workspaces/{await new_workspace(client, user)}"
    # Its row is locked before the deletion's checks (a write waits behind that lock, then
    # finds the workspace gone): the write lands before the lock, after the If-Match check.
    written = _write_before(
        monkeypatch,
        workspaces_service,
        "lock_workspace",
        lambda: client.patch(workspace, json={"name": "Renamed"}, headers=checked),
    )
    assert_error(await client.delete(workspace, headers=checked), 409, "concurrent_update")
    assert _version(written[0]) == 2
    assert data_of(await client.get(workspace, headers=user.headers))["name"] == "Renamed"
