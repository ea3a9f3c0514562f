"""Review of optimistic locking: a plan's default flag moves both plans' versions, `If-Match`
sent as several field lines is one list, and a 412 for an unusable tag says what is wrong."""

from fastapi import FastAPI
from httpx import AsyncClient, Response

from tests.e2e._apps import new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, make_admin, register

FIELDS = [{"name": "title", "type": "string"}]


def _version(response: Response) -> int:
    data = data_of(response)
    assert response.headers["ETag"] == f'"{data["version"]}"'
    version: int = data["version"]
    return version


async def _plans(client: AsyncClient, admin: User) -> dict[str, dict[str, object]]:
    listed = await client.get("/api/v1/admin/plans", headers=admin.headers)
    return {plan["code"]: plan for plan in data_of(listed)["list"]}


async def test_making_a_plan_the_default_gives_both_plans_a_new_version(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    free = (await _plans(client, admin))["free"]
    free_path = f"/api/v1/admin/plans/{free['id']}"
    free_version = _version(await client.get(free_path, headers=admin.headers))
    created = await client.post(
        "/api/v1/admin/plans", json={"code": "gold", "name": "Gold"}, headers=admin.headers
    )
    gold_path = f"/api/v1/admin/plans/{data_of(created)['id']}"
    read = {**admin.headers, "If-Match": '"1"'}

    made = await client.patch(gold_path, json={"isDefault": True}, headers=read)
    assert (data_of(made)["isDefault"], _version(made)) == (1, 2)
    stale = await client.patch(gold_path, json={"description": "lost"}, headers=read)
    assert_error(stale, 412, "precondition_failed")
    # The old default changed too (isDefault 0): an editor holding its old ETag is told so.
    cleared = await client.get(free_path, headers=admin.headers)
    assert (data_of(cleared)["isDefault"], _version(cleared)) == (0, free_version + 1)
    old_tag = {**admin.headers, "If-Match": f'"{free_version}"'}
    refused = await client.patch(free_path, json={"description": "lost"}, headers=old_tag)
    assert_error(refused, 412, "precondition_failed")

    # A new plan created as the default takes the flag from gold: gold's version moves.
    await client.post(
        "/api/v1/admin/plans",
        json={"code": "silver", "name": "Silver", "isDefault": True},
        headers=admin.headers,
    )
    plans = await _plans(client, admin)
    assert [code for code, plan in plans.items() if plan["isDefault"]] == ["silver"]
    assert (plans["silver"]["version"], plans["gold"]["version"]) == (1, 3)
    assert plans["free"]["version"] == free_version + 1  # not the default then: untouched


async def test_if_match_sent_as_several_field_lines_is_one_list(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    path = f"/api/v1/apps/{app_id}"
    lines = [(name.encode(), value.encode()) for name, value in user.headers.items()]

    def if_match(*tags: bytes) -> list[tuple[bytes, bytes]]:
        return lines + [(b"If-Match", tag) for tag in tags]

    listed = await client.patch(path, json={"name": "Second"}, headers=if_match(b'"7"', b'"1"'))
    assert _version(listed) == 2
    stale = await client.patch(path, json={"name": "Lost"}, headers=if_match(b'"1"', b'"7"'))
    assert_error(stale, 412, "precondition_failed")
    assert data_of(await client.get(path, headers=user.headers))["name"] == "Second"

    created = await client.post(
        "/api/v1/datasets",
        json={"appId": app_id, "name": "posts", "fields": FIELDS},
        headers=user.headers,
    )
    base = f"/api/v1/datasets/{data_of(created)['id']}/records"
    record_id = data_of(await client.post(base, json={"title": "a"}, headers=user.headers))["id"]
    record = f"{base}/{record_id}"
    # A record PUT requires If-Match (428): two lines of it are an If-Match all the same.
    replaced = await client.put(record, json={"title": "b"}, headers=if_match(b'"9"', b'"1"'))
    assert _version(replaced) == 2
    deleted = await client.delete(record, headers=if_match(b'"5"', b'"2"'))
    assert deleted.status_code == 200, deleted.text


async def test_a_412_for_a_tag_that_can_never_match_says_how_to_send_it(
    client: AsyncClient,
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    path = f"/api/v1/apps/{app_id}"
    for tag in ("1", 'W/"1"', '"1', "*, x", "1; DROP TABLE apps", "x" * 8000):
        refused = await client.patch(
            path, json={"name": "Lost"}, headers={**user.headers, "If-Match": tag}
        )
        assert assert_error(refused, 412, "precondition_failed") == {
            "error": "precondition_failed",
            "version": 1,
        }
        assert "quotes included" in refused.json()["message"], tag
    stale = await client.patch(
        path, json={"name": "Lost"}, headers={**user.headers, "If-Match": '"2"'}
    )
    assert_error(stale, 412, "precondition_failed")
    assert "changed" in stale.json()["message"]  # a well-formed stale tag: the usual answer
    read = data_of(await client.get(path, headers=user.headers))
    assert (read["name"] != "Lost", read["version"]) == (True, 1)
