"""`/api/v1/datasets` and their records over HTTP: definitions, typed records, optimistic locks,
roles, bad input that changes nothing, and workspaces that never see each other's data."""

from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from apiforge.core.db import unit_of_work
from apiforge.datasets.models import Record
from tests.e2e._workspaces import INJECTION, SCRIPT, assert_error, data_of, team
from tests.factories import User, register

POSTS: list[dict[str, Any]] = [
    {"name": "title", "type": "string", "required": True},
    {"name": "body", "type": "string"},
    {"name": "published", "type": "boolean", "indexed": True, "default": False},
    {"name": "slug", "type": "string", "unique": True},
    {"name": "views", "type": "integer"},
    {"name": "ssn", "type": "string", "encrypted": True},
]


async def new_app(client: AsyncClient, user: User, workspace_id: str | None = None) -> str:
    headers = {**user.headers, **({"X-Workspace-Id": workspace_id} if workspace_id else {})}
    app_id: str = data_of(
        await client.post("/api/v1/apps", json={"name": "Blog"}, headers=headers)
    )["id"]
    return app_id


async def new_dataset(
    client: AsyncClient, user: User, app_id: str, name: str = "posts", **extra: Any
) -> str:
    body = {"appId": app_id, "name": name, "fields": POSTS, **extra}
    dataset_id: str = data_of(
        await client.post("/api/v1/datasets", json=body, headers=user.headers)
    )["id"]
    return dataset_id


async def records(client: AsyncClient, user: User, dataset_id: str, **params: Any) -> Any:
    return data_of(
        await client.get(
            f"/api/v1/datasets/{dataset_id}/records", params=params, headers=user.headers
        )
    )


async def add(client: AsyncClient, user: User, dataset_id: str, **fields: Any) -> str:
    response = await client.post(
        f"/api/v1/datasets/{dataset_id}/records", json=fields, headers=user.headers
    )
    record_id: str = data_of(response)["id"]
    return record_id


@pytest.fixture
async def owner(client: AsyncClient) -> User:
    return await register(client)


# --- definitions ---------------------------------------------------------------------------------


async def test_dataset_lifecycle(client: AsyncClient, owner: User) -> None:
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id, description=SCRIPT)
    read = data_of(await client.get(f"/api/v1/datasets/{dataset_id}", headers=owner.headers))
    assert read["appId"] == app_id
    assert read["name"] == "posts"
    assert read["description"] == SCRIPT
    assert read["fields"][2] == {
        "name": "published",
        "type": "boolean",
        "required": 0,
        "unique": 0,
        "indexed": 1,
        "encrypted": 0,
        "default": False,
    }
    other = await new_app(client, owner)
    await new_dataset(client, owner, other, "comments")
    listed = data_of(await client.get("/api/v1/datasets", headers=owner.headers))
    assert [d["name"] for d in listed["list"]] == ["comments", "posts"]
    by_app = data_of(
        await client.get("/api/v1/datasets", params={"appId": app_id}, headers=owner.headers)
    )
    assert [d["id"] for d in by_app["list"]] == [dataset_id]
    found = data_of(
        await client.get("/api/v1/datasets", params={"q": "omm"}, headers=owner.headers)
    )
    assert [d["name"] for d in found["list"]] == ["comments"]
    fields = [*POSTS, {"name": "tags", "type": "array"}]
    updated = data_of(
        await client.put(
            f"/api/v1/datasets/{dataset_id}",
            json={"name": "articles", "description": "", "fields": fields},
            headers={**owner.headers, "If-Match": "*"},
        )
    )
    assert updated["name"] == "articles"
    assert [f["name"] for f in updated["fields"]][-1] == "tags"
    deleted = await client.delete(f"/api/v1/datasets/{dataset_id}", headers=owner.headers)
    assert data_of(deleted) == {"id": dataset_id}
    assert_error(
        await client.get(f"/api/v1/datasets/{dataset_id}", headers=owner.headers),
        404,
        "dataset_not_found",
    )


@pytest.mark.parametrize(
    ("body", "reason", "field"),
    [
        (
            {"name": "x", "fields": [{"name": "id", "type": "string"}]},
            "invalid_fields",
            "fields.0.name",
        ),
        (
            {
                "name": "x",
                "fields": [{"name": "a", "type": "string"}, {"name": "a", "type": "string"}],
            },
            "invalid_fields",
            "fields.1.name",
        ),
        (
            {"name": "x", "fields": [{"name": "a", "type": "string", "encrypted": 1, "unique": 1}]},
            "invalid_fields",
            "fields.0.unique",
        ),
        (
            {"name": "x", "fields": [{"name": "a", "type": "object", "indexed": True}]},
            "invalid_fields",
            "fields.0.indexed",
        ),
        (
            {"name": "x", "fields": [{"name": "a", "type": "integer", "default": "7"}]},
            "invalid_fields",
            "fields.0.default",
        ),
        (
            {"name": "x", "fields": [{"name": "a", "type": "money"}]},
            "invalid_input",
            "fields.0.type",
        ),
        (
            {"name": "x", "fields": [{"name": "a b", "type": "string"}]},
            "invalid_input",
            "fields.0.name",
        ),
        ({"name": INJECTION, "fields": []}, "invalid_input", "name"),
        ({"name": "x" * 65, "fields": []}, "invalid_input", "name"),
        ({"name": "x", "description": "d" * 2001}, "invalid_input", "description"),
        ({"name": "x", "colour": "red"}, "invalid_input", "colour"),
        ({"name": "x", "fields": "title"}, "invalid_input", "fields"),
        ({"fields": []}, "missing_parameters", "name"),
    ],
)
async def test_bad_definitions_are_refused_and_nothing_is_created(
    client: AsyncClient, owner: User, body: dict[str, Any], reason: str, field: str
) -> None:
    app_id = await new_app(client, owner)
    response = await client.post(
        "/api/v1/datasets", json={"appId": app_id, **body}, headers=owner.headers
    )
    data = assert_error(response, 400, reason)
    assert field in [e["field"] for e in data["errors"]]
    assert data_of(await client.get("/api/v1/datasets", headers=owner.headers))["totalCount"] == 0


async def test_malformed_json_is_refused(client: AsyncClient, owner: User) -> None:
    response = await client.post(
        "/api/v1/datasets",
        content=b'{"appId": "x", "name": ',
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 400, "malformed_json")


async def test_name_is_unique_per_app(client: AsyncClient, owner: User) -> None:
    app_id = await new_app(client, owner)
    await new_dataset(client, owner, app_id)
    response = await client.post(
        "/api/v1/datasets", json={"appId": app_id, "name": "posts"}, headers=owner.headers
    )
    assert_error(response, 409, "dataset_name_taken")
    second = await new_dataset(client, owner, app_id, "drafts")
    renamed = await client.put(
        f"/api/v1/datasets/{second}",
        json={"name": "posts", "fields": []},
        headers={**owner.headers, "If-Match": "*"},
    )
    assert_error(renamed, 409, "dataset_name_taken")


async def test_type_change_with_values_conflicts_and_removal_erases_values(
    client: AsyncClient, owner: User
) -> None:
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    record_id = await add(client, owner, dataset_id, title="t", views=5)
    changed = [{**f, "type": "string"} if f["name"] == "views" else f for f in POSTS]
    response = await client.put(
        f"/api/v1/datasets/{dataset_id}",
        json={"name": "posts", "fields": changed},
        headers={**owner.headers, "If-Match": "*"},
    )
    data = assert_error(response, 409, "field_has_values")
    assert data["errors"][0]["field"] == "views"
    without = [f for f in POSTS if f["name"] != "views"]
    for fields in (without, changed):  # remove (erases the values), then add back as a string
        data_of(
            await client.put(
                f"/api/v1/datasets/{dataset_id}",
                json={"name": "posts", "fields": fields},
                headers={**owner.headers, "If-Match": "*"},
            )
        )
    record = data_of(
        await client.get(
            f"/api/v1/datasets/{dataset_id}/records/{record_id}", headers=owner.headers
        )
    )
    assert record["views"] is None


async def test_making_a_field_unique_over_duplicates_conflicts(
    client: AsyncClient, owner: User
) -> None:
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    await add(client, owner, dataset_id, title="same")
    await add(client, owner, dataset_id, title="same")
    fields = [{**f, "unique": True} if f["name"] == "title" else f for f in POSTS]
    response = await client.put(
        f"/api/v1/datasets/{dataset_id}",
        json={"name": "posts", "fields": fields},
        headers={**owner.headers, "If-Match": "*"},
    )
    assert_error(response, 409, "duplicate_values")
    read = data_of(await client.get(f"/api/v1/datasets/{dataset_id}", headers=owner.headers))
    assert read["fields"][0]["unique"] == 0


# --- roles and tenants ---------------------------------------------------------------------------


async def test_viewer_reads_but_cannot_change(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "viewer", "editor")
    ws = {"X-Workspace-Id": workspace_id}
    app_id = await new_app(client, owner, workspace_id)
    body = {"appId": app_id, "name": "posts", "fields": POSTS}
    dataset_id = data_of(
        await client.post("/api/v1/datasets", json=body, headers={**owner.headers, **ws})
    )["id"]
    record_id = data_of(
        await client.post(
            f"/api/v1/datasets/{dataset_id}/records",
            json={"title": "t"},
            headers={**owner.headers, **ws},
        )
    )["id"]
    viewer = {**members["viewer"].headers, **ws}
    editor = {**members["editor"].headers, **ws}
    base = f"/api/v1/datasets/{dataset_id}"
    assert data_of(await client.get(base, headers=viewer))["id"] == dataset_id
    assert data_of(await client.get(f"{base}/records", headers=viewer))["totalCount"] == 1
    refused = [
        await client.post("/api/v1/datasets", json={**body, "name": "x"}, headers=viewer),
        await client.put(base, json={"name": "y", "fields": []}, headers=viewer),
        await client.delete(base, headers=viewer),
        await client.post(f"{base}/records", json={"title": "v"}, headers=viewer),
        await client.patch(f"{base}/records/{record_id}", json={"title": "v"}, headers=viewer),
        await client.put(f"{base}/records/{record_id}", json={"title": "v"}, headers=viewer),
        await client.delete(f"{base}/records/{record_id}", headers=viewer),
    ]
    for response in refused:
        assert_error(response, 403, "insufficient_role")
    page = data_of(await client.get(f"{base}/records", headers=viewer))
    assert page["totalCount"] == 1
    assert page["list"][0]["title"] == "t"
    assert data_of(await client.get(base, headers=viewer))["name"] == "posts"
    data_of(await client.patch(f"{base}/records/{record_id}", json={"title": "e"}, headers=editor))


async def test_other_workspace_never_sees_or_changes_anything(
    client: AsyncClient, app: FastAPI, owner: User
) -> None:
    """B knows A's dataset and record ids: every route answers the same 404, nothing changes."""
    intruder = await register(client)
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    record_id = await add(client, owner, dataset_id, title="private", ssn="123-45-6789")
    base = f"/api/v1/datasets/{dataset_id}"
    h = intruder.headers
    for response in [
        await client.get(base, headers=h),
        await client.put(base, json={"name": "stolen", "fields": []}, headers=h),
        await client.delete(base, headers=h),
        await client.get(f"{base}/records", headers=h),
        await client.post(f"{base}/records", json={"title": "planted"}, headers=h),
        await client.get(f"{base}/records/{record_id}", headers=h),
        await client.put(f"{base}/records/{record_id}", json={"title": "x"}, headers=h),
        await client.patch(f"{base}/records/{record_id}", json={"title": "x"}, headers=h),
        await client.delete(f"{base}/records/{record_id}", headers=h),
    ]:
        assert_error(response, 404, "dataset_not_found")
    assert_error(
        await client.post("/api/v1/datasets", json={"appId": app_id, "name": "mine"}, headers=h),
        404,
        "app_not_found",
    )
    # B's own workspace header pointing at A's workspace is refused too.
    assert_error(
        await client.get(base, headers={**h, "X-Workspace-Id": owner.workspace_id}),
        404,
        "workspace_not_found",
    )
    assert data_of(await client.get("/api/v1/datasets", headers=h))["totalCount"] == 0
    assert (
        data_of(await client.get("/api/v1/datasets", params={"appId": app_id}, headers=h))[
            "totalCount"
        ]
        == 0
    )
    record = data_of(await client.get(f"{base}/records/{record_id}", headers=owner.headers))
    assert (record["title"], record["ssn"], record["version"]) == ("private", "123-45-6789", 1)
    assert data_of(await client.get(base, headers=owner.headers))["name"] == "posts"
    async with unit_of_work(app.state.sessionmaker) as session:
        partitions = (await session.scalars(select(Record.partition))).all()
    assert partitions == [owner.workspace_id]


async def test_records_are_partitioned_by_the_acting_workspace(client: AsyncClient) -> None:
    """A member acting in another workspace of theirs sees that workspace's partition, which
    cannot reach the app's collection at all."""
    owner, workspace_id, members = await team(client, "editor")
    editor = members["editor"]
    app_id = await new_app(client, owner, workspace_id)
    body = {"appId": app_id, "name": "posts", "fields": POSTS}
    ws = {"X-Workspace-Id": workspace_id}
    dataset_id = data_of(
        await client.post("/api/v1/datasets", json=body, headers={**owner.headers, **ws})
    )["id"]
    await client.post(
        f"/api/v1/datasets/{dataset_id}/records",
        json={"title": "team"},
        headers={**editor.headers, **ws},
    )
    assert_error(
        await client.get(f"/api/v1/datasets/{dataset_id}/records", headers=editor.headers),
        404,
        "dataset_not_found",
    )


# --- records -------------------------------------------------------------------------------------


async def test_record_lifecycle_with_optimistic_lock(client: AsyncClient, owner: User) -> None:
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    base = f"/api/v1/datasets/{dataset_id}/records"
    record_id = await add(client, owner, dataset_id, title=INJECTION, body=SCRIPT, ssn="secret-1")
    record = data_of(await client.get(f"{base}/{record_id}", headers=owner.headers))
    assert record == {
        "id": record_id,
        "title": INJECTION,
        "body": SCRIPT,
        "published": False,
        "slug": None,
        "views": None,
        "ssn": "secret-1",
        "version": 1,
        "createdTime": record["createdTime"],
        "updatedTime": record["updatedTime"],
    }
    patched = data_of(
        await client.patch(
            f"{base}/{record_id}", json={"views": 3, "version": 1}, headers=owner.headers
        )
    )
    assert (patched["views"], patched["title"], patched["version"]) == (3, INJECTION, 2)
    stale = await client.put(
        f"{base}/{record_id}", json={"title": "late", "version": 1}, headers=owner.headers
    )
    assert assert_error(stale, 409, "version_conflict")["currentVersion"] == 2
    replaced = data_of(
        await client.put(
            f"{base}/{record_id}", json={"title": "new", "version": 2}, headers=owner.headers
        )
    )
    assert (replaced["title"], replaced["views"], replaced["ssn"], replaced["version"]) == (
        "new",
        None,
        None,
        3,
    )
    assert_error(
        await client.delete(f"{base}/{record_id}", params={"version": 2}, headers=owner.headers),
        409,
        "version_conflict",
    )
    assert data_of(
        await client.delete(f"{base}/{record_id}", params={"version": 3}, headers=owner.headers)
    ) == {"id": record_id}
    assert_error(
        await client.get(f"{base}/{record_id}", headers=owner.headers), 404, "record_not_found"
    )


async def test_encrypted_field_is_ciphertext_in_the_database(
    client: AsyncClient, app: FastAPI, owner: User
) -> None:
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    record_id = await add(client, owner, dataset_id, title="t", ssn="987-65-4321")
    async with unit_of_work(app.state.sessionmaker) as session:
        stored = await session.scalar(select(Record.data).where(Record.id == record_id))
    assert stored is not None
    assert "987-65-4321" not in orjson.dumps(stored).decode()
    record = data_of(
        await client.get(
            f"/api/v1/datasets/{dataset_id}/records/{record_id}", headers=owner.headers
        )
    )
    assert record["ssn"] == "987-65-4321"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"body": "no title"}, {"title"}),
        ({"title": 5}, {"title"}),
        ({"title": "t", "views": "many"}, {"views"}),
        ({"title": "t", "views": 2**70}, {"views"}),
        ({"title": "t", "published": "yes"}, {"published"}),
        ({"title": "t", "colour": "red"}, {"colour"}),
        ({"title": "t", "id": "01m7ze3v9ev5dh923kf93x2yhz"}, {"id"}),
        ({"title": None}, {"title"}),
        ({"title": "x\x00"}, {"title"}),  # PostgreSQL cannot store NUL: it answered 500
        ({"title": "t", "ssn": "\x00"}, {"ssn"}),
    ],
)
async def test_invalid_records_name_the_fields_and_store_nothing(
    client: AsyncClient, owner: User, body: dict[str, Any], fields: set[str]
) -> None:
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    response = await client.post(
        f"/api/v1/datasets/{dataset_id}/records", json=body, headers=owner.headers
    )
    data = assert_error(response, 400, "invalid_record")
    assert {e["field"] for e in data["errors"]} == fields
    assert (await records(client, owner, dataset_id))["totalCount"] == 0


async def test_record_bodies_that_are_not_objects_or_too_big(
    client: AsyncClient, owner: User
) -> None:
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    base = f"/api/v1/datasets/{dataset_id}/records"
    assert_error(
        await client.post(base, json=["title"], headers=owner.headers), 400, "invalid_input"
    )
    malformed = await client.post(
        base,
        content=b'{"title": "x"',
        headers={**owner.headers, "Content-Type": "application/json"},
    )
    assert_error(malformed, 400, "malformed_json")
    big = await client.post(base, json={"title": "x" * 400_000}, headers=owner.headers)
    assert_error(big, 413, "record_too_large")
    record_id = await add(client, owner, dataset_id, title="t")
    bad_version = await client.patch(
        f"{base}/{record_id}", json={"title": "u", "version": "1"}, headers=owner.headers
    )
    assert_error(bad_version, 400, "invalid_input")
    assert (await records(client, owner, dataset_id))["list"][0]["title"] == "t"


async def test_unique_value_conflicts(client: AsyncClient, owner: User) -> None:
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    await add(client, owner, dataset_id, title="a", slug="hello")
    response = await client.post(
        f"/api/v1/datasets/{dataset_id}/records",
        json={"title": "b", "slug": "hello"},
        headers=owner.headers,
    )
    data = assert_error(response, 409, "duplicate_value")
    assert data["errors"] == [{"field": "slug", "message": "already exists"}]
    assert (await records(client, owner, dataset_id))["totalCount"] == 1


async def test_record_list_filters_sorts_pages_and_projects(
    client: AsyncClient, owner: User
) -> None:
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    for i in range(6):
        await add(client, owner, dataset_id, title=f"t{i}", published=i % 2 == 0, views=i)
    newest = await records(client, owner, dataset_id, pageSize=2)
    assert [r["title"] for r in newest["list"]] == ["t5", "t4"]
    assert (newest["totalCount"], newest["totalPage"]) == (6, 3)
    published = await records(
        client,
        owner,
        dataset_id,
        filter=orjson.dumps({"published": {"_eq": True}}).decode(),
        sort="views",
        order="desc",
        fields="title,views",
    )
    assert published["list"] == [
        {"id": r["id"], "title": t, "views": v}
        for r, t, v in zip(published["list"], ["t4", "t2", "t0"], [4, 2, 0], strict=True)
    ]
    ranged = await records(
        client,
        owner,
        dataset_id,
        filter=orjson.dumps({"_and": [{"views": {"_gte": 2}}, {"views": {"_lt": 4}}]}).decode(),
        sort="views",
        order="asc",
    )
    assert [r["views"] for r in ranged["list"]] == [2, 3]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"filter": "{not json"}, "invalid_filter"),
        ({"filter": orjson.dumps({"colour": {"_eq": 1}}).decode()}, "invalid_filter"),
        ({"filter": orjson.dumps({"ssn": {"_eq": "x"}}).decode()}, "invalid_filter"),
        ({"filter": orjson.dumps({"views": {"_eq": "many"}}).decode()}, "invalid_filter"),
        ({"filter": orjson.dumps({"title": {"_regex": ".*"}}).decode()}, "invalid_filter"),
        ({"filter": "x" * 20_000}, "invalid_filter"),
        # Before year 1 once in UTC (it was a 500).
        (
            {"filter": orjson.dumps({"createdTime": {"_gt": "0001-01-01T00:00+01:00"}}).decode()},
            "invalid_filter",
        ),
        ({"sort": "ssn"}, "invalid_sort_field"),
        ({"sort": INJECTION}, "invalid_sort_field"),
        ({"fields": "title,nope"}, "invalid_input"),
        ({"pageSize": "1000000"}, "invalid_input"),
    ],
)
async def test_bad_record_queries_are_refused(
    client: AsyncClient, owner: User, params: dict[str, str], reason: str
) -> None:
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    response = await client.get(
        f"/api/v1/datasets/{dataset_id}/records", params=params, headers=owner.headers
    )
    assert_error(response, 400, reason)


async def test_malformed_ids_are_not_found(client: AsyncClient, owner: User) -> None:
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    assert_error(
        await client.get("/api/v1/datasets/' OR 1=1 --", headers=owner.headers),
        404,
        "dataset_not_found",
    )
    assert_error(
        await client.get(
            f"/api/v1/datasets/{dataset_id}/records/{'x' * 26}", headers=owner.headers
        ),
        404,
        "record_not_found",
    )


async def test_icontains_folds_case_beyond_ascii_on_every_backend(
    client: AsyncClient, owner: User
) -> None:
    # SQLite's own lower() folds ASCII only; the filter answers as PostgreSQL does, through the
    # records API and through a published API's call (read by the gateway's shared reader).
    from tests.e2e._apps import new_api
    from tests.e2e._keys import app_key, call

    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    wanted = await add(client, owner, dataset_id, title="ÉCOLE Ünïcode")
    await add(client, owner, dataset_id, title="ecole")
    query = orjson.dumps({"title": {"_icontains": "école ünï"}}).decode()
    found = await records(client, owner, dataset_id, filter=query)
    assert [r["id"] for r in found["list"]] == [wanted]
    steps = [
        {
            "id": "hits",
            "type": "getMany",
            "collection": "posts",
            "filter": {"title": {"_icontains": {"expr": "args.q"}}},
        }
    ]
    params = [{"name": "q", "required": True}]
    await new_api(client, owner.headers, app_id, "search", params=params, steps=steps, price=5)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
    )
    data_of(published)
    _, secret = await app_key(client, owner, app_id)
    answer = data_of(await call(client, secret, app_id, "search", {"q": "ÜNÏCODE"}))
    assert [r["id"] for r in answer["hits"]["list"]] == [wanted]


async def test_nulls_sort_last_ascending_and_first_descending_on_every_backend(
    client: AsyncClient, owner: User
) -> None:
    # SQLite's own order is the reverse of PostgreSQL's: a page must not depend on the database.
    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    for title, views in (("two", 2), ("none", None), ("one", 1), ("also none", None)):
        await add(client, owner, dataset_id, title=title, views=views)
    rising = await records(client, owner, dataset_id, sort="views", order="asc")
    assert [r["title"] for r in rising["list"]] == ["one", "two", "none", "also none"]
    falling = await records(client, owner, dataset_id, sort="views", order="desc")
    assert [r["title"] for r in falling["list"]] == ["also none", "none", "two", "one"]


async def test_a_field_a_published_version_reads_keeps_its_type(
    client: AsyncClient, owner: User
) -> None:
    # 1.0.0 filters `views` as an integer: a `views` of text would reach its casts (a 500 on
    # PostgreSQL, a loose comparison on SQLite), even removed and added back — also once the
    # version is deprecated (it still answers), which lets the field be removed.
    from tests.e2e._apps import new_api

    app_id = await new_app(client, owner)
    dataset_id = await new_dataset(client, owner, app_id)
    steps = [{"id": "n", "type": "count", "collection": "posts", "filter": {"views": {"_gt": 1}}}]
    await new_api(client, owner.headers, app_id, "popular", steps=steps, price=5)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
    )
    data_of(published)
    url, match = f"/api/v1/datasets/{dataset_id}", {**owner.headers, "If-Match": "*"}
    text = [{**f, "type": "string"} if f["name"] == "views" else f for f in POSTS]
    data = assert_error(
        await client.put(url, json={"name": "posts", "fields": text}, headers=match),
        409,
        "field_in_published_version",
    )
    assert data["errors"][0]["field"] == "views"
    assert "1.0.0" in data["errors"][0]["message"]
    without = [f for f in POSTS if f["name"] != "views"]
    deprecate = {"deprecated": 1}
    version_url = f"/api/v1/apps/{app_id}/versions/1.0.0"
    data_of(await client.patch(version_url, json=deprecate, headers=owner.headers))
    data_of(await client.put(url, json={"name": "posts", "fields": without}, headers=match))
    assert_error(
        await client.put(url, json={"name": "posts", "fields": text}, headers=match),
        409,
        "field_in_published_version",
    )
    # Under another name, or back as the type the version reads, it is fine.
    renamed = [*without, {"name": "viewsText", "type": "string"}]
    data_of(await client.put(url, json={"name": "posts", "fields": renamed}, headers=match))
    data_of(await client.put(url, json={"name": "posts", "fields": POSTS}, headers=match))
