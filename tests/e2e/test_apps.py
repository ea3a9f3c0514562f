"""`/api/v1/apps` and `/api/v1/apps/{appId}/apis`: CRUD on dev, validation, roles, tenancy."""

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, update

from apiforge.builder.env import runtime_env
from apiforge.builder.models import App
from apiforge.builder.signing import PREFIX, open_signing_secret
from apiforge.core.db import unit_of_work
from apiforge.plans.models import Plan
from tests.e2e._apps import apis_of, app_state, in_workspace, new_api, new_app
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import INJECTION, SCRIPT, assert_error, data_of, team
from tests.factories import register

HTTP_STEP = {"id": "fetch", "type": "httpRequest", "url": "https://example.com/"}


async def _stored_app(fastapi_app: FastAPI, app_id: str) -> App:
    async with unit_of_work(fastapi_app.state.sessionmaker) as session:
        row = await session.get(App, app_id)
        assert row is not None
        return row


# --- apps ---------------------------------------------------------------------------------------


async def test_app_lifecycle_create_read_list_update_delete(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers, "Blog", description="Posts and comments")
    app = data_of(await client.get(f"/api/v1/apps/{app_id}", headers=user.headers))
    assert app["id"] == app_id
    assert app["workspaceId"] == user.workspace_id
    assert app["name"] == "Blog"
    assert app["description"] == "Posts and comments"
    assert app["visibility"] == "private"
    assert app["latestVersion"] is None
    assert app["config"] == {}
    assert app["secretNames"] == []
    assert app["apiCount"] == 0
    assert app["createdTime"].endswith("Z")
    page = data_of(await client.get("/api/v1/apps", headers=user.headers))
    assert [a["id"] for a in page["list"]] == [app_id]

    changed = data_of(
        await client.patch(
            f"/api/v1/apps/{app_id}",
            json={"name": "Journal", "visibility": "public", "config": {"siteName": "J"}},
            headers=user.headers,
        )
    )
    assert (changed["name"], changed["visibility"]) == ("Journal", "public")
    assert changed["config"] == {"siteName": "J"}
    assert changed["description"] == "Posts and comments"

    assert data_of(await client.delete(f"/api/v1/apps/{app_id}", headers=user.headers)) == {
        "id": app_id
    }
    assert_error(
        await client.get(f"/api/v1/apps/{app_id}", headers=user.headers), 404, "app_not_found"
    )
    assert data_of(await client.get("/api/v1/apps", headers=user.headers))["totalCount"] == 0


async def test_signing_secret_is_generated_and_never_returned(
    client: AsyncClient, app: FastAPI
) -> None:
    user = await register(client)
    first = await new_app(client, user.headers, "One")
    second = await new_app(client, user.headers, "Two")
    rows = [await _stored_app(app, first), await _stored_app(app, second)]
    # Sealed at rest (builder/signing.py), in the column sized for the clear secret.
    assert all(row.signing_secret.startswith(PREFIX) for row in rows)
    assert all(len(row.signing_secret) <= 128 for row in rows)
    assert rows[0].signing_secret != rows[1].signing_secret
    settings = app.state.settings
    secrets = [open_signing_secret(settings, row.signing_secret) for row in rows]
    assert all(len(secret) >= 43 for secret in secrets)
    assert secrets[0] != secrets[1]
    assert all(secret not in row.signing_secret for secret, row in zip(secrets, rows, strict=True))
    for response in [
        await client.get(f"/api/v1/apps/{first}", headers=user.headers),
        await client.get("/api/v1/apps", headers=user.headers),
        await client.get(f"/api/v1/apps/{first}/export", headers=user.headers),
    ]:
        assert rows[0].signing_secret not in response.text
        assert secrets[0] not in response.text
        assert "signingSecret" not in response.text


async def test_secrets_are_write_only_and_encrypted_at_rest(
    client: AsyncClient, app: FastAPI
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers, secrets={"MAIL_KEY": "s3cr3t-value-1"})
    read = await client.get(f"/api/v1/apps/{app_id}", headers=user.headers)
    assert data_of(read)["secretNames"] == ["MAIL_KEY"]
    assert "s3cr3t-value-1" not in read.text
    patched = await client.patch(
        f"/api/v1/apps/{app_id}",
        json={"secrets": {"MAIL_KEY": None, "PAY_KEY": "pay-secret-2"}},
        headers=user.headers,
    )
    assert data_of(patched)["secretNames"] == ["PAY_KEY"]
    assert "pay-secret-2" not in patched.text
    row = await _stored_app(app, app_id)
    assert "pay-secret-2" not in str(row.env)
    assert runtime_env(app.state.settings, row.env)["secrets"] == {"PAY_KEY": "pay-secret-2"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 101}, "name"),
        ({"name": 5}, "name"),
        ({"name": "A", "description": "d" * 2001}, "description"),
        ({"name": "A", "visibility": "secret"}, "visibility"),
        ({"name": "A", "owner": "me"}, "owner"),
        ({"name": "A", "config": []}, "config"),
        ({"name": "A", "secrets": {"bad-name": "v"}}, "secrets.bad-name.[key]"),
        ({"name": "A", "secrets": {"K": ""}}, "secrets.K"),
        ({"name": "A", "secrets": {"K": "v" * 5000}}, "secrets.K"),
    ],
)
async def test_bad_app_input_is_refused_and_nothing_is_created(
    client: AsyncClient, body: dict[str, Any], field: str
) -> None:
    user = await register(client)
    response = await client.post("/api/v1/apps", json=body, headers=user.headers)
    assert response.status_code == 400, response.text
    assert field in [e["field"] for e in response.json()["data"]["errors"]]
    assert data_of(await client.get("/api/v1/apps", headers=user.headers))["totalCount"] == 0


async def test_malformed_json_and_bad_update_change_nothing(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    before = await app_state(client, user.headers, app_id)
    malformed = await client.post(
        "/api/v1/apps",
        content=b'{"name": "x",',
        headers={**user.headers, "Content-Type": "application/json"},
    )
    assert_error(malformed, 400, "malformed_json")
    for body in [
        {"name": ""},
        {"visibility": 1},
        {"signingSecret": "mine"},
        {"latestVersion": "9"},
    ]:
        response = await client.patch(f"/api/v1/apps/{app_id}", json=body, headers=user.headers)
        assert response.status_code == 400, response.text
    assert await app_state(client, user.headers, app_id) == before
    assert data_of(await client.get("/api/v1/apps", headers=user.headers))["totalCount"] == 1


async def test_injection_looking_strings_are_stored_as_plain_data(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers, INJECTION, description=SCRIPT)
    app = data_of(await client.get(f"/api/v1/apps/{app_id}", headers=user.headers))
    assert (app["name"], app["description"]) == (INJECTION, SCRIPT)
    found = data_of(await client.get("/api/v1/apps?q=DROP TABLE", headers=user.headers))
    assert [a["id"] for a in found["list"]] == [app_id]
    wildcard = data_of(await client.get("/api/v1/apps?q=%25", headers=user.headers))
    assert wildcard["totalCount"] == 0  # `%` is searched for literally, not a wildcard


async def test_searches_ignore_case_beyond_ascii_on_every_backend(client: AsyncClient) -> None:
    # One search rule (tools/filters.icontains) on every backend, SQLite included.
    user = await register(client)
    cafe = await new_app(client, user.headers, "CAFÉ Menü")
    await new_app(client, user.headers, "Cafe plain")
    found = data_of(await client.get("/api/v1/apps?q=café menü", headers=user.headers))
    assert [a["id"] for a in found["list"]] == [cafe]
    await new_api(client, user.headers, cafe, "orders", name="Bestellungen ÜBERSICHT")
    apis = data_of(await client.get(f"/api/v1/apps/{cafe}/apis?q=übersicht", headers=user.headers))
    assert [a["api"] for a in apis["list"]] == ["orders"]


async def test_list_searches_and_refuses_unknown_sort(client: AsyncClient) -> None:
    user = await register(client)
    await new_app(client, user.headers, "Shop")
    blog = await new_app(client, user.headers, "Blog", description="posts")
    found = data_of(await client.get("/api/v1/apps?q=POST", headers=user.headers))
    assert [a["id"] for a in found["list"]] == [blog]
    by_name = data_of(await client.get("/api/v1/apps?sort=name&order=asc", headers=user.headers))
    assert [a["name"] for a in by_name["list"]] == ["Blog", "Shop"]
    assert_error(
        await client.get("/api/v1/apps?sort=signingSecret", headers=user.headers),
        400,
        "invalid_sort_field",
    )


async def test_roles_viewer_reads_editor_changes_admin_deletes(client: AsyncClient) -> None:
    _owner, workspace_id, members = await team(client, "viewer", "editor", "admin")
    viewer = in_workspace(members["viewer"], workspace_id)
    editor = in_workspace(members["editor"], workspace_id)
    admin = in_workspace(members["admin"], workspace_id)
    app_id = await new_app(client, editor, "Team app")
    before = await app_state(client, viewer, app_id)

    data = assert_error(
        await client.post("/api/v1/apps", json={"name": "V"}, headers=viewer),
        403,
        "insufficient_role",
    )
    assert data["requiredRole"] == "editor"
    assert_error(
        await client.patch(f"/api/v1/apps/{app_id}", json={"name": "V"}, headers=viewer),
        403,
        "insufficient_role",
    )
    assert_error(
        await client.post(f"/api/v1/apps/{app_id}/apis", json={"api": "x"}, headers=viewer),
        403,
        "insufficient_role",
    )
    data = assert_error(
        await client.delete(f"/api/v1/apps/{app_id}", headers=editor), 403, "insufficient_role"
    )
    assert data["requiredRole"] == "admin"
    assert await app_state(client, viewer, app_id) == before
    data_of(await client.delete(f"/api/v1/apps/{app_id}", headers=admin))
    assert data_of(await client.get("/api/v1/apps", headers=viewer))["totalCount"] == 0


async def test_another_workspace_cannot_see_or_touch_the_app(client: AsyncClient) -> None:
    alice = await register(client)
    bob = await register(client)
    app_id = await new_app(client, alice.headers, "Private")
    api_id = await new_api(client, alice.headers, app_id, "getThing")
    data_of(
        await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=alice.headers
        )
    )
    before = await app_state(client, alice.headers, app_id)
    base = f"/api/v1/apps/{app_id}"
    attempts = [
        ("GET", base, None),
        ("PATCH", base, {"name": "Mine"}),
        ("DELETE", base, None),
        ("GET", f"{base}/apis", None),
        ("GET", f"{base}/api-groups", None),
        ("POST", f"{base}/apis", {"api": "evil"}),
        ("GET", f"{base}/apis/{api_id}", None),
        ("PATCH", f"{base}/apis/{api_id}", {"price": 9}),
        ("DELETE", f"{base}/apis/{api_id}", None),
        ("GET", f"{base}/versions", None),
        ("POST", f"{base}/versions", {"bump": "major"}),
        ("GET", f"{base}/versions/1.0.0", None),
        ("PATCH", f"{base}/versions/1.0.0", {"deprecated": 1}),
        ("GET", f"{base}/openapi.json", None),
        ("GET", f"{base}/docs", None),
        ("GET", f"{base}/export", None),
    ]
    for method, url, body in attempts:
        response = await client.request(method, url, json=body, headers=bob.headers)
        assert_error(response, 404, "app_not_found")
        assert "Private" not in response.text
    # An unknown id answers exactly the same way, so existence never leaks.
    unknown = await client.get("/api/v1/apps/00000000000000000000000000", headers=bob.headers)
    assert unknown.json() == (await client.get(base, headers=bob.headers)).json()
    assert data_of(await client.get("/api/v1/apps", headers=bob.headers))["totalCount"] == 0
    assert await app_state(client, alice.headers, app_id) == before


async def test_app_quota_of_the_plan_is_enforced(client: AsyncClient, app: FastAPI) -> None:
    user = await register(client)
    async with unit_of_work(app.state.sessionmaker) as session:
        plan = await session.scalar(select(Plan).where(Plan.is_default.is_(True)))
        assert plan is not None
        await session.execute(
            update(Plan).where(Plan.id == plan.id).values(quotas={**plan.quotas, "apps": 1})
        )
    await new_app(client, user.headers, "First")
    data = assert_error(
        await client.post("/api/v1/apps", json={"name": "Second"}, headers=user.headers),
        403,
        "quota_exceeded",
    )
    assert (data["quota"], data["limit"], data["used"]) == ("apps", 1, 1)
    assert data_of(await client.get("/api/v1/apps", headers=user.headers))["totalCount"] == 1


# --- APIs on dev --------------------------------------------------------------------------------


async def test_api_is_created_read_and_listed_with_its_cost(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    body = {
        "api": "fetchPage",
        "name": "Fetch a page",
        "description": "Gets example.com",
        "docExtra": "Needs nothing",
        "group": "web",
        "price": 7,
        "params": [{"name": "path", "type": "string", "required": True}],
        "steps": [HTTP_STEP],
        "returnSteps": ["fetch"],
        "auth": {"requireToken": True, "mode": "simple", "rights": ["read", "read"]},
    }
    created = data_of(
        await client.post(f"/api/v1/apps/{app_id}/apis", json=body, headers=user.headers)
    )
    api = data_of(
        await client.get(f"/api/v1/apps/{app_id}/apis/{created['id']}", headers=user.headers)
    )
    assert api["api"] == "fetchPage"
    assert api["cost"] == 5  # the seeded httpRequest price
    assert api["price"] == 7
    assert api["enabled"] == 1
    assert api["params"] == body["params"]
    assert api["steps"] == [HTTP_STEP]
    assert api["returnSteps"] == ["fetch"]
    assert api["auth"] == {
        "requireToken": 1,
        "public": 0,
        "requireIdempotencyKey": 0,
        "mode": "simple",
        "rights": ["read"],
        "target": None,
    }
    assert api["docExtra"] == "Needs nothing"
    listed = data_of(await client.get(f"/api/v1/apps/{app_id}/apis", headers=user.headers))
    assert listed["list"][0]["cost"] == 5
    assert "steps" not in listed["list"][0]
    app = data_of(await client.get(f"/api/v1/apps/{app_id}", headers=user.headers))
    assert app["apiCount"] == 1


async def test_list_is_alphabetical_searchable_and_grouped(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    for api, group, description in [
        ("updatePost", "posts", ""),
        ("Login", "users", "sign a user in"),
        ("createPost", "posts", ""),
        ("health", "", "liveness"),
    ]:
        await new_api(client, user.headers, app_id, api, group=group, description=description)
    url = f"/api/v1/apps/{app_id}/apis"
    listed = data_of(await client.get(url, headers=user.headers))
    assert [a["api"] for a in listed["list"]] == ["createPost", "health", "Login", "updatePost"]
    found = data_of(await client.get(f"{url}?q=USER", headers=user.headers))
    assert [a["api"] for a in found["list"]] == ["Login"]
    posts = data_of(await client.get(f"{url}?group=posts", headers=user.headers))
    assert [a["api"] for a in posts["list"]] == ["createPost", "updatePost"]
    groups = data_of(await client.get(f"/api/v1/apps/{app_id}/api-groups", headers=user.headers))
    assert groups == {"list": [{"name": "posts", "apiCount": 2}, {"name": "users", "apiCount": 1}]}
    paged = data_of(await client.get(f"{url}?pageSize=3&pageNo=2", headers=user.headers))
    assert [a["api"] for a in paged["list"]] == ["updatePost"]
    assert_error(
        await client.get(f"{url}?sort=steps", headers=user.headers), 400, "invalid_sort_field"
    )


async def test_api_names_are_unique_per_app(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    other_app = await new_app(client, user.headers, "Other")
    await new_api(client, user.headers, app_id, "getPost")
    await new_api(client, user.headers, other_app, "getPost")  # another app: fine
    second = await new_api(client, user.headers, app_id, "getPosts")
    before = await apis_of(client, user.headers, app_id)
    dup = await client.post(
        f"/api/v1/apps/{app_id}/apis", json={"api": "getPost"}, headers=user.headers
    )
    assert_error(dup, 409, "api_exists")
    rename = await client.patch(
        f"/api/v1/apps/{app_id}/apis/{second}", json={"api": "getPost"}, headers=user.headers
    )
    assert_error(rename, 409, "api_exists")
    assert await apis_of(client, user.headers, app_id) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"api": "get-post"}, "api"),
        ({"api": "1post"}, "api"),
        ({"api": ""}, "api"),
        ({"api": "a" * 65}, "api"),
        ({"api": INJECTION}, "api"),
        ({"api": "ok", "price": -1}, "price"),
        ({"api": "ok", "price": 2**60}, "price"),
        ({"api": "ok", "price": "5"}, "price"),
        ({"api": "ok", "enabled": "maybe"}, "enabled"),
        ({"api": "ok", "steps": {"id": "a"}}, "steps"),
        ({"api": "ok", "steps": [{"id": "a", "type": "nope"}]}, "steps.a.type"),
        ({"api": "ok", "steps": [{"id": "a b", "type": "set"}]}, "steps.0.id"),
        ({"api": "ok", "params": [{"name": "x", "type": "date"}]}, "params.0.type"),
        ({"api": "ok", "params": [{"name": "x"}, {"name": "x"}]}, "params.1.name"),
        ({"api": "ok", "returnSteps": ["ghost"]}, "returnSteps.0"),
        ({"api": "ok", "auth": {"mode": "simple", "rights": ["r"]}}, "auth"),
        ({"api": "ok", "auth": {"requireToken": 1, "mode": "simple"}}, "auth"),
        ({"api": "ok", "auth": {"requireToken": 1, "mode": "root"}}, "auth.mode"),
        (
            {"api": "ok", "auth": {"requireToken": 1, "mode": "userSystem", "rights": ["r"]}},
            "auth",
        ),
        (
            {
                "api": "ok",
                "auth": {
                    "requireToken": 1,
                    "mode": "userSystem",
                    "rights": ["r"],
                    "target": {"source": "arg", "value": "orgId"},
                },
            },
            "auth.target.value",
        ),
        ({"api": "ok", "cost": 0}, "cost"),
        ({"api": "ok", "docExtra": "x" * 20_001}, "docExtra"),
    ],
)
async def test_bad_api_definitions_are_refused_naming_the_field(
    client: AsyncClient, body: dict[str, Any], field: str
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    response = await client.post(f"/api/v1/apps/{app_id}/apis", json=body, headers=user.headers)
    assert response.status_code == 400, response.text
    fields = [e["field"] for e in response.json()["data"]["errors"]]
    assert field in fields, fields
    assert await apis_of(client, user.headers, app_id) == {}


async def test_price_below_cost_is_refused_on_save(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    url = f"/api/v1/apps/{app_id}/apis"
    cheap = await client.post(
        url, json={"api": "fetch", "price": 4, "steps": [HTTP_STEP]}, headers=user.headers
    )
    data = assert_error(cheap, 400, "price_below_cost")
    assert data["errors"] == [{"field": "price", "message": "must be at least the cost, 5"}]
    api_id = data_of(
        await client.post(
            url, json={"api": "fetch", "price": 5, "steps": [HTTP_STEP]}, headers=user.headers
        )
    )["id"]
    lowered = await client.patch(f"{url}/{api_id}", json={"price": 1}, headers=user.headers)
    assert_error(lowered, 400, "price_below_cost")
    assert data_of(await client.get(f"{url}/{api_id}", headers=user.headers))["price"] == 5


async def test_update_merges_fields_and_validates_the_result(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    api_id = await new_api(
        client, user.headers, app_id, "fetch", price=9, steps=[HTTP_STEP], group="web"
    )
    url = f"/api/v1/apps/{app_id}/apis/{api_id}"
    changed = data_of(
        await client.patch(url, json={"name": "Fetch", "enabled": False}, headers=user.headers)
    )
    assert (changed["name"], changed["enabled"], changed["group"]) == ("Fetch", 0, "web")
    assert (changed["price"], changed["cost"], changed["steps"]) == (9, 5, [HTTP_STEP])
    cleared = data_of(await client.patch(url, json={"steps": []}, headers=user.headers))
    assert cleared["cost"] == 0
    before = data_of(await client.get(url, headers=user.headers))
    for body in [
        {"steps": [{"id": "x", "type": "nope"}]},
        {"returnSteps": ["fetch"]},
        {"unknown": 1},
        {"api": "bad name"},
    ]:
        response = await client.patch(url, json=body, headers=user.headers)
        assert response.status_code == 400, response.text
    assert data_of(await client.get(url, headers=user.headers)) == before


async def test_deleting_an_api_removes_it_from_dev(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    keep = await new_api(client, user.headers, app_id, "keep")
    drop = await new_api(client, user.headers, app_id, "drop")
    url = f"/api/v1/apps/{app_id}/apis"
    assert data_of(await client.delete(f"{url}/{drop}", headers=user.headers)) == {"id": drop}
    assert_error(await client.get(f"{url}/{drop}", headers=user.headers), 404, "api_not_found")
    assert_error(await client.delete(f"{url}/{drop}", headers=user.headers), 404, "api_not_found")
    assert list(await apis_of(client, user.headers, app_id)) == ["keep"]
    assert keep in [a["id"] for a in data_of(await client.get(url, headers=user.headers))["list"]]


async def test_api_of_another_app_is_not_found_through_this_app(client: AsyncClient) -> None:
    user = await register(client)
    first = await new_app(client, user.headers, "First")
    second = await new_app(client, user.headers, "Second")
    api_id = await new_api(client, user.headers, first, "onlyHere")
    for path in [f"/api/v1/apps/{second}/apis/{api_id}", f"/api/v1/apps/{first}/apis/not-an-id"]:
        assert_error(await client.get(path, headers=user.headers), 404, "api_not_found")


async def test_concurrent_saves_of_one_name_keep_one_api(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    url = f"/api/v1/apps/{app_id}/apis"
    responses = await asyncio.gather(
        *(client.post(url, json={"api": "same"}, headers=user.headers) for _ in range(3))
    )
    assert sorted(r.status_code for r in responses) == [200, 409, 409]
    assert {r.json()["data"]["error"] for r in responses if r.status_code == 409} == {"api_exists"}
    assert list(await apis_of(client, user.headers, app_id)) == ["same"]


async def test_an_app_others_use_is_deleted_only_with_force(client: AsyncClient) -> None:
    """Deleting an app takes other workspaces' keys and the records they keep in its
    collections: refused (409 `app_in_use`, nothing deleted) unless asked for with `force`."""
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    await app_key(client, owner, app_id)  # the owner's own subscription doesn't count
    _key_id, secret = await app_key(client, consumer, app_id)
    data_of(await call(client, secret, app_id, "addNote", {"text": "mine"}))
    path = f"/api/v1/apps/{app_id}"
    for query in ("", "?force=false", "?force=0"):
        refused = await client.delete(path + query, headers=owner.headers)
        assert_error(refused, 409, "app_in_use")
        assert refused.json()["data"]["subscribers"] == 1
    bad = await client.delete(path + "?force=maybe", headers=owner.headers)
    assert_error(bad, 400, "invalid_input")
    listed = data_of(await call(client, secret, app_id, "listNotes"))
    assert [n["text"] for n in listed["notes"]["list"]] == ["mine"]  # nothing went
    assert data_of(await client.delete(path + "?force=true", headers=owner.headers)) == {
        "id": app_id
    }
    assert_error(await call(client, secret, app_id, "listNotes"), 404, "app_not_found")
