"""Acceptance: data of workspace A is never visible to workspace B — through the datasets API,
through every data step run as a workflow, or by invoking A's app.

Both tenants build an app named "Blog" with a `posts` collection of the same fields. B knows A's
real ids (apps, datasets, records) and guesses others; every attempt is a 404 or an empty answer,
and A's records are exactly what they were. B's own collection also holds two records in A's
partition (what a consumer A calling B's app will write through the gateway; written here with
the record store): B's steps never see or touch them either, so isolation is shown to rest on the
partition, not only on the two apps having different collections.
"""

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select

from apiforge.datasets.models import Collection, Record
from apiforge.datasets.schema import CollectionSchema
from apiforge.datasets.store import RecordStore
from apiforge.tools.ids import new_id
from tests.e2e._apps import new_api, new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

POSTS: list[dict[str, Any]] = [
    {"name": "title", "type": "string", "required": True},
    {"name": "slug", "type": "string", "unique": True},
    {"name": "views", "type": "integer", "indexed": True},
    {"name": "published", "type": "boolean", "default": False},
]
A_POSTS = [
    {"title": "A public", "slug": "hello", "views": 10, "published": True},
    {"title": "A draft", "slug": "secret", "views": 20},
]
B_POSTS = [{"title": "B public", "slug": "b-hello", "views": 1, "published": True}]
# Written in B's collection under A's partition (see the module docstring).
FOREIGN = [
    {"title": "A's call to B's app", "slug": "foreign-1", "views": 1000, "published": True},
    {"title": "A's other call", "slug": "foreign-2", "views": 2000, "published": True},
]


@dataclass
class Tenant:
    user: User
    app_id: str
    dataset_id: str
    record_ids: list[str]

    @property
    def headers(self) -> dict[str, str]:
        return self.user.headers

    @property
    def workspace_id(self) -> str:
        return self.user.workspace_id


async def tenant(client: AsyncClient, posts: list[dict[str, Any]]) -> Tenant:
    """A user whose personal workspace has a "Blog" app with a `posts` collection and records."""
    user = await register(client)
    app_id = await new_app(client, user.headers, "Blog")
    body = {"appId": app_id, "name": "posts", "fields": POSTS}
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))[
        "id"
    ]
    ids = []
    for post in posts:
        response = await client.post(
            f"/api/v1/datasets/{dataset_id}/records", json=post, headers=user.headers
        )
        ids.append(data_of(response)["id"])
    return Tenant(user, app_id, dataset_id, ids)


async def state(client: AsyncClient, owner: Tenant) -> dict[str, Any]:
    """Everything the owner can see of its data: datasets, the definition, every record."""
    h = owner.headers
    base = f"/api/v1/datasets/{owner.dataset_id}"
    return {
        "datasets": data_of(await client.get("/api/v1/datasets", headers=h)),
        "definition": data_of(await client.get(base, headers=h)),
        "records": data_of(await client.get(f"{base}/records?pageSize=100", headers=h)),
        "one": [
            data_of(await client.get(f"{base}/records/{rid}", headers=h))
            for rid in owner.record_ids
        ],
    }


async def plant_foreign_records(app: FastAPI, owner: Tenant, partition: str) -> list[str]:
    """Records in `owner`'s collection but in another workspace's partition."""
    async with app.state.engine.begin() as conn:
        row = (
            await conn.execute(select(Collection).where(Collection.id == owner.dataset_id))
        ).one()
        schema = CollectionSchema.build(
            id=row.id, app_id=row.app_id, name=row.name, fields=row.fields
        )
        store = RecordStore(conn, None)
        return [(await store.insert(schema, partition, data))["id"] for data in FOREIGN]


async def raw_records(app: FastAPI) -> dict[str, tuple[str, str, int, Any]]:
    """id -> (collection, partition, version, data) of every record in the database."""
    async with app.state.engine.connect() as conn:
        rows = await conn.execute(
            select(Record.id, Record.collection_id, Record.partition, Record.version, Record.data)
        )
        return {r.id: (r.collection_id, r.partition, r.version, r.data) for r in rows}


async def workflow(
    client: AsyncClient, actor: Tenant, steps: list[dict[str, Any]], app_id: str | None = None
) -> Response:
    body = {"appId": app_id or actor.app_id, "steps": steps}
    return await client.post("/api/v1/workflows", json=body, headers=actor.headers)


async def test_datasets_api_never_shows_one_workspace_to_another(
    client: AsyncClient, app: FastAPI
) -> None:
    a = await tenant(client, A_POSTS)
    b = await tenant(client, B_POSTS)
    before = await state(client, a)
    database_before = await raw_records(app)
    h = b.headers

    # A's real dataset id, and a guessed one, on every route.
    for dataset_id in (a.dataset_id, new_id()):
        base = f"/api/v1/datasets/{dataset_id}"
        record_id = a.record_ids[0]
        filter_hello = {"filter": '{"slug": {"_eq": "hello"}}'}
        for response in [
            await client.get(base, headers=h),
            await client.put(base, json={"name": "stolen", "fields": []}, headers=h),
            await client.delete(base, headers=h),
            await client.get(f"{base}/records", headers=h),
            await client.get(f"{base}/records", params=filter_hello, headers=h),
            await client.post(f"{base}/records", json={"title": "planted"}, headers=h),
            await client.get(f"{base}/records/{record_id}", headers=h),
            await client.put(f"{base}/records/{record_id}", json={"title": "x"}, headers=h),
            await client.patch(f"{base}/records/{record_id}", json={"title": "x"}, headers=h),
            await client.delete(f"{base}/records/{record_id}", headers=h),
        ]:
            assert_error(response, 404, "dataset_not_found")

    # A's real record ids (and a guessed one) through B's own dataset: not found.
    own = f"/api/v1/datasets/{b.dataset_id}/records"
    for record_id in [*a.record_ids, new_id()]:
        for response in [
            await client.get(f"{own}/{record_id}", headers=h),
            await client.put(f"{own}/{record_id}", json={"title": "x"}, headers=h),
            await client.patch(f"{own}/{record_id}", json={"title": "x", "version": 1}, headers=h),
            await client.delete(f"{own}/{record_id}", headers=h),
        ]:
            assert_error(response, 404, "record_not_found")

    # Listings show B's only; A's app and workspace cannot even be named.
    listed = data_of(await client.get("/api/v1/datasets?pageSize=100", headers=h))
    assert [d["id"] for d in listed["list"]] == [b.dataset_id]
    by_app = data_of(await client.get("/api/v1/datasets", params={"appId": a.app_id}, headers=h))
    assert (by_app["totalCount"], by_app["list"]) == (0, [])
    assert [r["title"] for r in data_of(await client.get(own, headers=h))["list"]] == ["B public"]
    assert_error(
        await client.get("/api/v1/datasets", headers={**h, "X-Workspace-Id": a.workspace_id}),
        404,
        "workspace_not_found",
    )
    assert_error(
        await client.post(
            "/api/v1/datasets", json={"appId": a.app_id, "name": "mine", "fields": POSTS}, headers=h
        ),
        404,
        "app_not_found",
    )

    assert await state(client, a) == before
    assert await raw_records(app) == database_before


def step_cases(others: list[str]) -> list[tuple[dict[str, Any], Any]]:
    """(a data step run in B's workspace, what B must get), `others` being record ids B must
    never reach: reads see B's one record only."""
    posts = "posts"
    return [
        *[
            ({"id": "s", "type": "getOne", "collection": posts, "recordId": rid}, None)
            for rid in others
        ],
        (
            {
                "id": "s",
                "type": "getOne",
                "collection": posts,
                "filter": {"slug": {"_in": ["hello", "secret", "foreign-1", "foreign-2"]}},
            },
            None,
        ),
        (
            {"id": "s", "type": "getMany", "collection": posts, "fields": ["title"]},
            {"pageNo": 1, "pageSize": 20, "totalCount": 1, "totalPage": 1},
        ),
        ({"id": "s", "type": "count", "collection": posts}, 1),
        ({"id": "s", "type": "count", "collection": posts, "filter": {"views": {"_gte": 2}}}, 0),
        (
            {
                "id": "s",
                "type": "aggregate",
                "collection": posts,
                "groupBy": ["published"],
                "metrics": {"n": {"op": "count"}, "views": {"op": "sum", "field": "views"}},
            },
            [{"published": True, "n": 1, "views": 1}],
        ),
    ]


async def one_step(client: AsyncClient, actor: Tenant, step: dict[str, Any]) -> Any:
    """The output of `step` run alone as a workflow in `actor`'s workspace."""
    return data_of(await workflow(client, actor, [{"id": "s", "collection": "posts", **step}]))["s"]


async def test_every_data_step_in_b_sees_only_bs_partition(
    client: AsyncClient, app: FastAPI
) -> None:
    a = await tenant(client, A_POSTS)
    b = await tenant(client, B_POSTS)
    foreign = await plant_foreign_records(app, b, a.workspace_id)
    others = [*a.record_ids, *foreign]
    before = await state(client, a)
    database_before = await raw_records(app)

    # getOne, getMany, count, aggregate: only B's record.
    for step, expected in step_cases(others):
        output = data_of(await workflow(client, b, [step]))["s"]
        if step["type"] == "getMany":
            assert [r["title"] for r in output.pop("list")] == ["B public"]
        assert output == expected, step

    # update, delete: A's record ids (and the foreign-partition ones) are 404s naming the step.
    for rid in others:
        refused: list[dict[str, Any]] = [
            {"type": "update", "recordId": rid, "data": {"views": 0}},
            {"type": "update", "recordId": rid, "data": {"views": 0}, "version": 1},
            {"type": "delete", "recordId": rid},
        ]
        for step in refused:
            body = {"id": "s", "collection": "posts", **step}
            response = await workflow(client, b, [body])
            assert assert_error(response, 404, "record_not_found")["stepId"] == "s"
    # A `delete` that tolerates a missing record reports it as not deleted.
    for rid in others:
        gone = await one_step(client, b, {"type": "delete", "recordId": rid, "required": False})
        assert gone == {"id": rid, "deleted": False}
    assert await raw_records(app) == database_before

    # insert: unique values are per partition, so a value A holds (in B's collection too) is
    # free in B's partition; the new record is B's.
    data: dict[str, Any] = {"title": "B one", "slug": "foreign-1"}
    inserted = await one_step(client, b, {"type": "insert", "data": data})
    assert (inserted["slug"], inserted["version"]) == ("foreign-1", 1)
    assert inserted["id"] not in others
    # upsert: on a value only another partition holds, it inserts B's own record...
    for slug in ("foreign-2", "secret"):
        data = {"title": f"B {slug}", "slug": slug, "views": 5}
        upserted = await one_step(client, b, {"type": "upsert", "on": "slug", "data": data})
        assert upserted["id"] not in others
        assert (upserted["title"], upserted["version"]) == (f"B {slug}", 1)
    # ... and on B's own value it updates B's record, still never another partition's.
    data = {"title": "B foreign-2 again", "slug": "foreign-2"}
    again = await one_step(client, b, {"type": "upsert", "on": "slug", "data": data})
    assert (again["title"], again["version"]) == ("B foreign-2 again", 2)
    assert again["id"] not in others

    # B's data steps cannot be pointed at A's app, nor run in A's workspace.
    count = [{"id": "s", "type": "count", "collection": "posts"}]
    assert_error(await workflow(client, b, count, app_id=a.app_id), 404, "app_not_found")
    assert_error(
        await client.post(
            "/api/v1/workflows",
            json={"appId": a.app_id, "steps": count},
            headers={**b.headers, "X-Workspace-Id": a.workspace_id},
        ),
        404,
        "workspace_not_found",
    )

    # A sees exactly what it had, the foreign-partition records are untouched, B has its own.
    assert await state(client, a) == before
    after = await raw_records(app)
    for rid in others:
        assert after[rid] == database_before[rid]
    b_records = data_of(
        await client.get(f"/api/v1/datasets/{b.dataset_id}/records", headers=b.headers)
    )
    slugs = sorted(r["slug"] for r in b_records["list"])
    assert slugs == ["b-hello", "foreign-1", "foreign-2", "secret"]
    assert data_of(await workflow(client, a, count))["s"] == 2


async def test_b_cannot_invoke_a_private_app_of_a(client: AsyncClient) -> None:
    a = await tenant(client, A_POSTS)
    b = await tenant(client, B_POSTS)
    steps = [{"id": "posts", "type": "getMany", "collection": "posts", "pageSize": 20}]
    await new_api(client, a.headers, a.app_id, "listPosts", steps=steps, price=1)
    data_of(
        await client.post(
            f"/api/v1/apps/{a.app_id}/versions", json={"bump": "major"}, headers=a.headers
        )
    )
    shown = data_of(await client.get(f"/api/v1/apps/{a.app_id}", headers=a.headers))
    assert shown["visibility"] == "private"

    for version in ("dev", "latest", "1.0.0"):
        body = {"appId": a.app_id, "api": "listPosts", "version": version}
        assert_error(
            await client.post("/api/v1/invocations", json=body, headers=b.headers),
            404,
            "app_not_found",
        )
        # The same answer as for an app that does not exist: nothing leaks.
        guessed = {**body, "appId": new_id()}
        assert_error(
            await client.post("/api/v1/invocations", json=guessed, headers=b.headers),
            404,
            "app_not_found",
        )
        own = data_of(await client.post("/api/v1/invocations", json=body, headers=a.headers))
        assert own["posts"]["totalCount"] == 2
    # A debug trace (which would show inputs and outputs) is refused the same way.
    debug = {"appId": a.app_id, "api": "listPosts", "version": "dev", "debug": 1}
    assert_error(
        await client.post("/api/v1/invocations", json=debug, headers=b.headers),
        404,
        "app_not_found",
    )
