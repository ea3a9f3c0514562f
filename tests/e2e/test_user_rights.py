"""`/api/v1/apps/{appId}/user-rights`: the calling workspace's grants of an app's user system —
list, grant (merged), revoke — for the app's builder and for consumers that enabled it, with
roles, tenancy and bad input refused and nothing changed."""

from typing import Any

import pytest
from httpx import AsyncClient

from tests.e2e._apps import new_app
from tests.e2e._keys import subscribe
from tests.e2e._perms import grant, perms_app, user_rights
from tests.e2e._workspaces import INJECTION, SCRIPT, add_member, assert_error, data_of, team
from tests.factories import User, register


def _path(app_id: str) -> str:
    return f"/api/v1/apps/{app_id}/user-rights"


async def _builder_app(client: AsyncClient) -> tuple[User, str]:
    owner = await register(client)
    return owner, await perms_app(client, owner)


def _held(rows: list[dict[str, Any]]) -> list[tuple[str, str, list[str]]]:
    return [(row["userId"], row["target"], row["rights"]) for row in rows]


async def test_grant_list_and_revoke(client: AsyncClient) -> None:
    owner, app_id = await _builder_app(client)
    response = await grant(client, owner.headers, app_id, "alice", "org1", ["read", "read"])
    assert data_of(response) == {"userId": "alice", "target": "org1", "rights": ["read"]}
    merged = await grant(client, owner.headers, app_id, "alice", "org1", ["write", "read"])
    assert data_of(merged)["rights"] == ["read", "write"]
    data_of(await grant(client, owner.headers, app_id, "bob", "", ["admin"]))

    rows = await user_rights(client, owner.headers, app_id)
    assert _held(rows) == [("alice", "org1", ["read", "write"]), ("bob", "", ["admin"])]
    assert set(rows[0]) == {"userId", "target", "rights", "updatedTime"}
    assert rows[0]["updatedTime"].endswith("Z")

    some = await client.delete(
        f"{_path(app_id)}?userId=alice&target=org1&rights=read&rights=absent",
        headers=owner.headers,
    )
    assert data_of(some) == {"userId": "alice", "target": "org1", "rights": ["write"]}
    every = await client.delete(f"{_path(app_id)}?userId=bob", headers=owner.headers)
    assert data_of(every) == {"userId": "bob", "target": "", "rights": []}
    assert _held(await user_rights(client, owner.headers, app_id)) == [("alice", "org1", ["write"])]
    last = await client.delete(
        f"{_path(app_id)}?userId=alice&target=org1&rights=write", headers=owner.headers
    )
    assert data_of(last)["rights"] == []
    assert await user_rights(client, owner.headers, app_id) == []


async def test_revoking_what_is_not_held_is_404(client: AsyncClient) -> None:
    owner, app_id = await _builder_app(client)
    data_of(await grant(client, owner.headers, app_id, "alice", "org1", ["read"]))
    for query in ["userId=alice&target=org2", "userId=nobody&target=org1", "userId=alice"]:
        response = await client.delete(f"{_path(app_id)}?{query}", headers=owner.headers)
        assert_error(response, 404, "user_right_not_found")
    assert _held(await user_rights(client, owner.headers, app_id)) == [("alice", "org1", ["read"])]


async def test_lists_filter_sort_and_page(client: AsyncClient) -> None:
    owner, app_id = await _builder_app(client)
    for user, target in [("carol", "t1"), ("alice", "t2"), ("bob", "t1"), ("alice", "t1")]:
        data_of(await grant(client, owner.headers, app_id, user, target, ["r"]))
    rows = await user_rights(client, owner.headers, app_id)
    assert [(r["userId"], r["target"]) for r in rows] == [
        ("alice", "t1"),
        ("alice", "t2"),
        ("bob", "t1"),
        ("carol", "t1"),
    ]
    by_user = await user_rights(client, owner.headers, app_id, "&userId=alice")
    assert [r["target"] for r in by_user] == ["t1", "t2"]
    by_target = await user_rights(
        client, owner.headers, app_id, "&target=t1&sort=userId&order=desc"
    )
    assert [r["userId"] for r in by_target] == ["carol", "bob", "alice"]
    page = data_of(await client.get(f"{_path(app_id)}?pageSize=3&pageNo=2", headers=owner.headers))
    assert (page["totalCount"], page["totalPage"], page["pageNo"]) == (4, 2, 2)
    assert [(r["userId"], r["target"]) for r in page["list"]] == [("carol", "t1")]
    for bad in ["sort=rights", "pageSize=0", "order=up", "pageNo=x"]:
        assert_error(
            await client.get(f"{_path(app_id)}?{bad}", headers=owner.headers),
            400,
            ("invalid_sort_field" if bad.startswith("sort") else "invalid_input"),
        )


async def test_a_consumer_manages_its_own_partition_only(client: AsyncClient) -> None:
    owner, app_id = await _builder_app(client)
    consumer = await register(client)
    other = await register(client)
    await subscribe(client, consumer.headers, app_id)
    await subscribe(client, other.headers, app_id)
    data_of(await grant(client, owner.headers, app_id, "alice", "org", ["builder"]))
    data_of(await grant(client, consumer.headers, app_id, "alice", "org", ["consumer"]))

    assert _held(await user_rights(client, owner.headers, app_id)) == [
        ("alice", "org", ["builder"])
    ]
    assert _held(await user_rights(client, consumer.headers, app_id)) == [
        ("alice", "org", ["consumer"])
    ]
    assert await user_rights(client, other.headers, app_id) == []
    # Revoking in one's own partition never touches another's row.
    response = await client.delete(
        f"{_path(app_id)}?userId=alice&target=org", headers=other.headers
    )
    assert_error(response, 404, "user_right_not_found")
    data_of(
        await client.delete(f"{_path(app_id)}?userId=alice&target=org", headers=consumer.headers)
    )
    assert _held(await user_rights(client, owner.headers, app_id)) == [
        ("alice", "org", ["builder"])
    ]


async def test_apps_out_of_reach_are_404_and_nothing_is_written(client: AsyncClient) -> None:
    owner, app_id = await _builder_app(client)
    private_app = await new_app(client, owner.headers, "Private")
    stranger = await register(client)
    disabled = await register(client)
    subscription = await subscribe(client, disabled.headers, app_id)
    response = await client.patch(
        f"/api/v1/subscriptions/{subscription}", json={"enabled": False}, headers=disabled.headers
    )
    data_of(response)

    cases = [
        (stranger, app_id),  # public but not enabled by the stranger
        (disabled, app_id),  # enabled once, now disabled
        (stranger, private_app),
        (owner, "01" + "x" * 24),  # well-formed, unknown
        (owner, "not-an-id"),
        (owner, INJECTION),
    ]
    for user, target_app in cases:
        path = _path(target_app).replace("'", "%27").replace(" ", "%20").replace(";", "%3B")
        body = {"userId": "alice", "target": "", "rights": ["r"]}
        assert_error(await client.get(path, headers=user.headers), 404, "app_not_found")
        assert_error(
            await client.post(path, json=body, headers=user.headers), 404, ("app_not_found")
        )
        response = await client.delete(f"{path}?userId=alice", headers=user.headers)
        assert_error(response, 404, "app_not_found")
    assert await user_rights(client, owner.headers, app_id) == []


async def test_viewers_list_and_editors_change(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "viewer", "editor")
    headers = {**owner.headers, "X-Workspace-Id": workspace_id}
    app_id = await new_app(client, headers, "Team app")
    viewer = {**members["viewer"].headers, "X-Workspace-Id": workspace_id}
    editor = {**members["editor"].headers, "X-Workspace-Id": workspace_id}
    data_of(await grant(client, editor, app_id, "alice", "", ["r"]))

    assert _held(await user_rights(client, viewer, app_id)) == [("alice", "", ["r"])]
    data = assert_error(
        await grant(client, viewer, app_id, "alice", "", ["more"]), 403, ("insufficient_role")
    )
    assert data["requiredRole"] == "editor"
    response = await client.delete(f"{_path(app_id)}?userId=alice", headers=viewer)
    assert_error(response, 403, "insufficient_role")
    assert _held(await user_rights(client, editor, app_id)) == [("alice", "", ["r"])]
    # Outside the team, the workspace does not exist.
    outsider = await register(client)
    await add_member(client, owner, workspace_id, await register(client), "viewer")
    response = await client.get(
        _path(app_id), headers={**outsider.headers, "X-Workspace-Id": workspace_id}
    )
    assert_error(response, 404, "workspace_not_found")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"userId": "alice", "target": "", "rights": []}, "rights"),
        ({"userId": "", "target": "", "rights": ["r"]}, "userId"),
        ({"userId": "   ", "target": "", "rights": ["r"]}, "userId"),
        ({"userId": 42, "target": "", "rights": ["r"]}, "userId"),
        ({"userId": "alice", "target": None, "rights": ["r"]}, "target"),
        ({"userId": "alice", "rights": "read"}, "rights"),
        ({"userId": "alice", "rights": [1]}, "rights.0"),
        ({"userId": "alice", "rights": [""]}, "rights.0"),
        ({"userId": "u" * 129, "rights": ["r"]}, "userId"),
        ({"userId": "alice", "target": "t" * 129, "rights": ["r"]}, "target"),
        ({"userId": "alice", "rights": ["r" * 129]}, "rights.0"),
        ({"userId": "alice", "rights": [f"r{i}" for i in range(101)]}, "rights"),
        ({"userId": "alice", "rights": ["r"], "admin": True}, "admin"),
        ({"rights": ["r"]}, "userId"),
    ],
)
async def test_bad_grants_are_400_and_change_nothing(
    client: AsyncClient, body: dict[str, Any], field: str
) -> None:
    owner, app_id = await _builder_app(client)
    data_of(await grant(client, owner.headers, app_id, "alice", "", ["kept"]))
    response = await client.post(_path(app_id), json=body, headers=owner.headers)
    reason = "invalid_input" if field.split(".")[0] in body else "missing_parameters"
    data = assert_error(response, 400, reason)
    assert field in [error["field"] for error in data["errors"]], data
    assert _held(await user_rights(client, owner.headers, app_id)) == [("alice", "", ["kept"])]


async def test_malformed_json_is_400(client: AsyncClient) -> None:
    owner, app_id = await _builder_app(client)
    response = await client.post(
        _path(app_id),
        content=b'{"userId": "alice", "rights": [',
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["code"] == 400
    assert await user_rights(client, owner.headers, app_id) == []


async def test_a_user_holds_at_most_100_rights_per_target(client: AsyncClient) -> None:
    owner, app_id = await _builder_app(client)
    first = [f"r{i}" for i in range(100)]
    assert (
        len(data_of(await grant(client, owner.headers, app_id, "alice", "", first))["rights"])
        == 100
    )
    # Already held rights are no news.
    data_of(await grant(client, owner.headers, app_id, "alice", "", ["r0", "r99"]))
    data = assert_error(
        await grant(client, owner.headers, app_id, "alice", "", ["r100"]), 400, ("too_many_rights")
    )
    assert data["errors"] == [{"field": "rights", "message": "at most 100 per user and target"}]
    (row,) = await user_rights(client, owner.headers, app_id)
    assert row["rights"] == first


@pytest.mark.parametrize(
    "query",
    [
        "",
        "userId=",
        "target=x",
        f"userId={'u' * 129}",
        f"userId=a&target={'t' * 129}",
        "userId=a&rights=",
        "userId=a&" + "&".join(f"rights=r{i}" for i in range(101)),
    ],
)
async def test_bad_revokes_are_400_and_change_nothing(client: AsyncClient, query: str) -> None:
    owner, app_id = await _builder_app(client)
    data_of(await grant(client, owner.headers, app_id, "a", "", ["kept"]))
    response = await client.delete(f"{_path(app_id)}?{query}", headers=owner.headers)
    assert_error(response, 400, "invalid_input" if "userId" in query else "missing_parameters")
    assert _held(await user_rights(client, owner.headers, app_id)) == [("a", "", ["kept"])]


async def test_injection_looking_values_are_plain_data(client: AsyncClient) -> None:
    owner, app_id = await _builder_app(client)
    data_of(await grant(client, owner.headers, app_id, INJECTION, SCRIPT, [SCRIPT, INJECTION]))
    data_of(await grant(client, owner.headers, app_id, "%", "_", ["*"]))
    rows = await user_rights(client, owner.headers, app_id)
    assert _held(rows) == [("%", "_", ["*"]), (INJECTION, SCRIPT, [SCRIPT, INJECTION])]
    # LIKE wildcards are not wildcards in the filters.
    assert await user_rights(client, owner.headers, app_id, "&userId=%25%25") == []
    response = await client.delete(
        _path(app_id), params={"userId": INJECTION, "target": SCRIPT}, headers=owner.headers
    )
    assert data_of(response)["rights"] == []
    assert _held(await user_rights(client, owner.headers, app_id)) == [("%", "_", ["*"])]


async def test_unauthenticated_calls_are_401(client: AsyncClient) -> None:
    owner, app_id = await _builder_app(client)
    assert_error(await client.get(_path(app_id)), 401, "unauthenticated")
    body = {"userId": "a", "rights": ["r"]}
    response = await client.post(_path(app_id), json=body, headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert await user_rights(client, owner.headers, app_id) == []


async def test_ids_are_trimmed_alike_by_grant_list_and_revoke(client: AsyncClient) -> None:
    """A grant trims `userId`, `target` and rights (every body's strings are); the list filter
    and revoke read the same ids, so what one spelling granted the same spelling finds and
    revokes."""
    owner, app_id = await _builder_app(client)
    held = await grant(client, owner.headers, app_id, " alice ", " org1 ", [" read "])
    assert data_of(held) == {"userId": "alice", "target": "org1", "rights": ["read"]}
    listed = await client.get(
        f"{_path(app_id)}?userId=%20alice%20&target=%20org1%20", headers=owner.headers
    )
    assert _held(data_of(listed)["list"]) == [("alice", "org1", ["read"])]
    revoked = await client.delete(
        f"{_path(app_id)}?userId=%20alice%20&target=%20org1%20&rights=%20read%20",
        headers=owner.headers,
    )
    assert data_of(revoked) == {"userId": "alice", "target": "org1", "rights": []}
    assert await user_rights(client, owner.headers, app_id) == []
    blank = await client.delete(f"{_path(app_id)}?userId=%20%20", headers=owner.headers)
    assert_error(blank, 400, "invalid_input")
