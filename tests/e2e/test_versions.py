"""`/api/v1/apps/{appId}/versions`: publishing dev as immutable semver snapshots, over HTTP only."""

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from tests.e2e._apps import app_state, in_workspace, new_api, new_app, set_step
from tests.e2e._workspaces import assert_error, data_of, team
from tests.factories import make_admin, register

HTTP_STEP = {"id": "fetch", "type": "httpRequest", "url": "https://example.com/"}


async def _publish(
    client: AsyncClient, headers: dict[str, str], app_id: str, bump: str, **extra: Any
) -> dict[str, Any]:
    response = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": bump, **extra}, headers=headers
    )
    result: dict[str, Any] = data_of(response)
    return result


async def _version(
    client: AsyncClient, headers: dict[str, str], app_id: str, version: str
) -> dict[str, Any]:
    response = await client.get(f"/api/v1/apps/{app_id}/versions/{version}", headers=headers)
    result: dict[str, Any] = data_of(response)
    return result


async def _call(
    client: AsyncClient, headers: dict[str, str], app_id: str, version: str, args: dict[str, Any]
) -> Any:
    body = {"appId": app_id, "api": "getPost", "version": version, "args": args}
    return data_of(await client.post("/api/v1/invocations", json=body, headers=headers))


async def test_canonical_flow_publish_change_dev_publish_again(client: AsyncClient) -> None:
    """create app → APIs → publish 1.0.0 → change dev → 1.0.0 and latest unchanged → publish
    1.1.0 → latest moved."""
    user = await register(client)
    h = user.headers
    app_id = await new_app(client, h, "Blog")
    get_post = await new_api(
        client,
        h,
        app_id,
        "getPost",
        params=[{"name": "id", "type": "string", "required": True}],
        steps=[set_step("post", {"expr": "args.id"})],
        group="posts",
    )
    await new_api(
        client,
        h,
        app_id,
        "listPosts",
        params=[{"name": "pageNo", "type": "integer", "default": 1}],
        steps=[set_step("page", {"expr": "args.pageNo"})],
        group="posts",
    )

    first = await _publish(client, h, app_id, "major", notes="First release")
    assert first["version"] == "1.0.0"
    assert first["previousVersion"] is None
    assert first["breaking"] == 0
    assert sorted((c["api"], c["kind"]) for c in first["changes"]) == [
        ("getPost", "api_added"),
        ("listPosts", "api_added"),
    ]
    v1 = await _version(client, h, app_id, "1.0.0")
    assert v1["notes"] == "First release"
    assert v1["latest"] == 1
    assert v1["deprecated"] == 0
    assert v1["apiCount"] == 2
    assert v1["publishedBy"] == user.account_id
    assert sorted(v1["snapshot"]["apis"]) == ["getPost", "listPosts"]
    frozen = v1["snapshot"]["apis"]["getPost"]
    assert frozen["params"] == [{"name": "id", "type": "string", "required": True}]
    assert frozen["steps"] == [set_step("post", {"expr": "args.id"})]
    assert frozen["cost"] == 0
    assert await _version(client, h, app_id, "latest") == v1
    app = data_of(await client.get(f"/api/v1/apps/{app_id}", headers=h))
    assert app["latestVersion"] == "1.0.0"

    # Change dev: new optional param and steps, a new API.
    data_of(
        await client.patch(
            f"/api/v1/apps/{app_id}/apis/{get_post}",
            json={
                "params": [
                    {"name": "id", "type": "string", "required": True},
                    {"name": "withComments", "type": "boolean"},
                ],
                "steps": [set_step("post", {"expr": "args"})],
                "description": "One post",
            },
            headers=h,
        )
    )
    await new_api(client, h, app_id, "countPosts", steps=[set_step("n", 0)])
    assert await _version(client, h, app_id, "1.0.0") == v1
    assert await _version(client, h, app_id, "latest") == v1
    # Calls agree: the published versions run the frozen steps, dev the new ones.
    assert await _call(client, h, app_id, "1.0.0", {"id": "p1"}) == {"post": "p1"}
    assert await _call(client, h, app_id, "latest", {"id": "p1"}) == {"post": "p1"}
    assert await _call(client, h, app_id, "dev", {"id": "p1"}) == {"post": {"id": "p1"}}

    second = await _publish(client, h, app_id, "minor", notes="Comments")
    assert second["version"] == "1.1.0"
    assert second["previousVersion"] == "1.0.0"
    assert second["breaking"] == 0
    kinds = sorted((c["api"], c["kind"], c["param"]) for c in second["changes"])
    assert kinds == [("countPosts", "api_added", ""), ("getPost", "param_added", "withComments")]
    latest = await _version(client, h, app_id, "latest")
    assert latest["version"] == "1.1.0"
    assert sorted(latest["snapshot"]["apis"]) == ["countPosts", "getPost", "listPosts"]
    assert latest["snapshot"]["apis"]["getPost"]["description"] == "One post"
    old = await _version(client, h, app_id, "1.0.0")
    assert old == {**v1, "latest": 0}
    assert await _call(client, h, app_id, "latest", {"id": "p1"}) == {"post": {"id": "p1"}}
    assert await _call(client, h, app_id, "1.0.0", {"id": "p1"}) == {"post": "p1"}
    app = data_of(await client.get(f"/api/v1/apps/{app_id}", headers=h))
    assert app["latestVersion"] == "1.1.0"
    listed = data_of(await client.get(f"/api/v1/apps/{app_id}/versions", headers=h))
    assert [(v["version"], v["latest"]) for v in listed["list"]] == [("1.1.0", 1), ("1.0.0", 0)]
    assert "snapshot" not in listed["list"][0]


async def test_deleted_api_stays_in_published_versions(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    api_id = await new_api(client, user.headers, app_id, "goneSoon")
    await new_api(client, user.headers, app_id, "stays")
    await _publish(client, user.headers, app_id, "major")
    data_of(await client.delete(f"/api/v1/apps/{app_id}/apis/{api_id}", headers=user.headers))
    dev = data_of(await client.get(f"/api/v1/apps/{app_id}/apis", headers=user.headers))
    assert [a["api"] for a in dev["list"]] == ["stays"]
    snapshot = (await _version(client, user.headers, app_id, "1.0.0"))["snapshot"]
    assert sorted(snapshot["apis"]) == ["goneSoon", "stays"]


async def test_breaking_change_needs_a_major_bump_unless_forced(client: AsyncClient) -> None:
    user = await register(client)
    h = user.headers
    app_id = await new_app(client, h)
    api_id = await new_api(client, h, app_id, "search", params=[{"name": "q"}])
    await new_api(client, h, app_id, "legacy")
    await _publish(client, h, app_id, "major")
    data_of(
        await client.patch(
            f"/api/v1/apps/{app_id}/apis/{api_id}",
            json={"params": [{"name": "q"}, {"name": "lang", "required": True}]},
            headers=h,
        )
    )
    before = await app_state(client, h, app_id)
    for bump in ("minor", "patch"):
        refused = await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": bump}, headers=h
        )
        data = assert_error(refused, 409, "breaking_change_requires_major")
        assert [(c["api"], c["kind"], c["param"], c["breaking"]) for c in data["changes"]] == [
            ("search", "required_param_added", "lang", 1)
        ]
    assert await app_state(client, h, app_id) == before

    forced = await _publish(client, h, app_id, "minor", force=True)
    assert (forced["version"], forced["breaking"]) == ("1.1.0", 1)

    # Removing an API and retyping a param are breaking too; a major bump goes through.
    legacy = list(data_of(await client.get(f"/api/v1/apps/{app_id}/apis", headers=h))["list"])
    legacy_id = next(a["id"] for a in legacy if a["api"] == "legacy")
    data_of(await client.delete(f"/api/v1/apps/{app_id}/apis/{legacy_id}", headers=h))
    data_of(
        await client.patch(
            f"/api/v1/apps/{app_id}/apis/{api_id}",
            json={"params": [{"name": "q", "type": "integer"}, {"name": "lang", "required": 1}]},
            headers=h,
        )
    )
    refused = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "patch"}, headers=h
    )
    data = assert_error(refused, 409, "breaking_change_requires_major")
    assert sorted((c["api"], c["kind"]) for c in data["changes"]) == [
        ("legacy", "api_removed"),
        ("search", "param_type_changed"),
    ]
    major = await _publish(client, h, app_id, "major")
    assert (major["version"], major["previousVersion"], major["breaking"]) == ("2.0.0", "1.1.0", 1)


async def test_published_versions_refuse_change_but_can_be_deprecated(
    client: AsyncClient,
) -> None:
    user = await register(client)
    h = user.headers
    app_id = await new_app(client, h)
    await new_api(client, h, app_id, "ping")
    await _publish(client, h, app_id, "major", notes="n")
    url = f"/api/v1/apps/{app_id}/versions/1.0.0"
    original = await _version(client, h, app_id, "1.0.0")
    for body in [{"notes": "rewritten"}, {"snapshot": {}}, {"deprecated": 1, "version": "9.9.9"}]:
        data = assert_error(await client.patch(url, json=body, headers=h), 409, "version_immutable")
        assert data["version"] == "1.0.0"
    assert_error(await client.put(url, json={"notes": "x"}, headers=h), 409, "version_immutable")
    assert_error(await client.delete(url, headers=h), 409, "version_immutable")
    for body in [{}, {"deprecated": "maybe"}, {"deprecated": None}]:
        assert (await client.patch(url, json=body, headers=h)).status_code == 400
    assert await _version(client, h, app_id, "1.0.0") == original

    deprecated = data_of(await client.patch(url, json={"deprecated": True}, headers=h))
    assert deprecated["deprecated"] == 1
    assert deprecated["snapshot"] == original["snapshot"]
    assert deprecated["latest"] == 1  # still the latest, still callable
    restored = data_of(await client.patch(url, json={"deprecated": 0}, headers=h))
    # Each change takes the next revision (the version's optimistic lock); nothing else moved.
    assert restored == {**original, "revision": original["revision"] + 2}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"bump": "huge"},
        {"bump": 1},
        {"bump": "major", "notes": "n" * 20_001},
        {"bump": "major", "version": "5.0.0"},
        {"bump": "major", "force": "yes"},
    ],
)
async def test_bad_publish_requests_publish_nothing(
    client: AsyncClient, body: dict[str, Any]
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await new_api(client, user.headers, app_id, "ping")
    before = await app_state(client, user.headers, app_id)
    response = await client.post(f"/api/v1/apps/{app_id}/versions", json=body, headers=user.headers)
    assert response.status_code == 400, response.text
    assert await app_state(client, user.headers, app_id) == before


async def test_an_app_without_apis_has_nothing_to_publish(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    refused = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=user.headers
    )
    assert_error(refused, 409, "no_apis")
    app = data_of(await client.get(f"/api/v1/apps/{app_id}", headers=user.headers))
    assert app["latestVersion"] is None


async def test_publish_recomputes_cost_with_current_prices(
    client: AsyncClient, app: FastAPI
) -> None:
    user = await register(client)
    admin = await make_admin(app, client)
    app_id = await new_app(client, user.headers)
    api_id = await new_api(client, user.headers, app_id, "fetch", price=6, steps=[HTTP_STEP])
    data_of(
        await client.put(
            "/api/v1/admin/pricing/httpRequest", json={"cost": 8}, headers=admin.headers
        )
    )
    before = await app_state(client, user.headers, app_id)
    refused = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=user.headers
    )
    data = assert_error(refused, 400, "price_below_cost")
    assert data["errors"] == [
        {"field": "apis.fetch.price", "message": "must be at least the cost, 8"}
    ]
    assert await app_state(client, user.headers, app_id) == before

    data_of(
        await client.patch(
            f"/api/v1/apps/{app_id}/apis/{api_id}", json={"price": 8}, headers=user.headers
        )
    )
    await _publish(client, user.headers, app_id, "major")
    snapshot = (await _version(client, user.headers, app_id, "1.0.0"))["snapshot"]
    assert (snapshot["apis"]["fetch"]["price"], snapshot["apis"]["fetch"]["cost"]) == (8, 8)


async def test_publish_recompiles_against_current_collections(client: AsyncClient) -> None:
    """A step reading a collection that was deleted since the API was saved blocks the publish,
    naming the API and the step; the snapshot freezes the collections' schemas."""
    user = await register(client)
    h = user.headers
    app_id = await new_app(client, h)
    created = await client.post(
        "/api/v1/datasets",
        json={
            "appId": app_id,
            "name": "posts",
            "fields": [{"name": "title", "type": "string", "required": True}],
        },
        headers=h,
    )
    collection_id = data_of(created)["id"]
    count_step = {"id": "total", "type": "count", "collection": "posts"}
    await new_api(client, h, app_id, "countPosts", price=5, steps=[count_step])
    await _publish(client, h, app_id, "major")
    snapshot = (await _version(client, h, app_id, "1.0.0"))["snapshot"]
    assert snapshot["collections"]["posts"]["id"] == collection_id
    assert snapshot["collections"]["posts"]["fields"][0]["name"] == "title"

    data_of(await client.delete(f"/api/v1/datasets/{collection_id}", headers=h))
    refused = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=h
    )
    data = assert_error(refused, 400, "invalid_definition")
    assert data["errors"][0]["field"] == "apis.countPosts.steps.total.collection"


async def test_unknown_versions_are_not_found(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    for version in ["latest", "1.0.0", "1.0", "dev", "x" * 30]:
        response = await client.get(
            f"/api/v1/apps/{app_id}/versions/{version}", headers=user.headers
        )
        assert_error(response, 404, "version_not_found")


async def test_viewers_read_versions_but_cannot_publish_or_deprecate(client: AsyncClient) -> None:
    _owner, workspace_id, members = await team(client, "viewer", "editor")
    editor = in_workspace(members["editor"], workspace_id)
    viewer = in_workspace(members["viewer"], workspace_id)
    app_id = await new_app(client, editor)
    await new_api(client, editor, app_id, "ping")
    published = await _publish(client, editor, app_id, "major")
    before = await app_state(client, viewer, app_id)
    assert_error(
        await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=viewer
        ),
        403,
        "insufficient_role",
    )
    assert_error(
        await client.patch(
            f"/api/v1/apps/{app_id}/versions/1.0.0", json={"deprecated": 1}, headers=viewer
        ),
        403,
        "insufficient_role",
    )
    assert (await _version(client, viewer, app_id, "latest"))["id"] == published["id"]
    assert await app_state(client, viewer, app_id) == before


async def test_concurrent_publishes_never_share_a_number(client: AsyncClient) -> None:
    """PostgreSQL serialises them on the app row (both succeed, 1.0.0 then 2.0.0); SQLite's
    single writer makes the loser a clean 409 `version_exists`. Never a 500, never a duplicate."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await new_api(client, user.headers, app_id, "ping")
    url = f"/api/v1/apps/{app_id}/versions"
    responses = await asyncio.gather(
        *(client.post(url, json={"bump": "major"}, headers=user.headers) for _ in range(3))
    )
    assert {r.status_code for r in responses} <= {200, 409}
    published = sorted(r.json()["data"]["version"] for r in responses if r.status_code == 200)
    for refused in (r for r in responses if r.status_code == 409):
        assert refused.json()["data"]["error"] == "version_exists"
    assert published
    assert len(set(published)) == len(published)
    listed = data_of(await client.get(url, headers=user.headers))
    assert sorted(v["version"] for v in listed["list"]) == published
    app = data_of(await client.get(f"/api/v1/apps/{app_id}", headers=user.headers))
    assert app["latestVersion"] == published[-1]
