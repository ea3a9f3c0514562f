"""Replacing a collection's fields against what others rely on: subscribers' values of a removed
field go only on purpose (409 `field_in_use` unless `?force=true`), a field a published version
names stays until that version is deprecated (409 `field_in_published_version`), and a
published version's writes keep the values of fields added since it was published."""

from typing import Any

import pytest
from httpx import AsyncClient

from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key, call
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

pytestmark = pytest.mark.anyio

TEXT: dict[str, Any] = {"name": "text", "type": "string", "required": True}
TAG: dict[str, Any] = {"name": "tag", "type": "string"}
EXTRA: dict[str, Any] = {"name": "extra", "type": "integer"}
PARAMS = [
    {"name": "text", "type": "string", "required": True},
    {"name": "tag", "type": "string"},
]
PRICE = 100

# api -> (params, steps). `add` and `byTag` name `tag`; `list` and `edit` do not.
APIS: dict[str, tuple[list[Any], list[Any]]] = {
    "add": (
        PARAMS,
        [
            {
                "id": "note",
                "type": "insert",
                "collection": "notes",
                "data": {"text": {"expr": "args.text"}, "tag": {"expr": "args.tag"}},
            }
        ],
    ),
    "byTag": (
        [{"name": "tag", "type": "string", "required": True}],
        [
            {
                "id": "notes",
                "type": "getMany",
                "collection": "notes",
                "filter": {"tag": {"_eq": {"expr": "args.tag"}}},
            }
        ],
    ),
    "list": ([], [{"id": "notes", "type": "getMany", "collection": "notes", "pageSize": 50}]),
    "edit": (
        [{"name": "id", "type": "string", "required": True}],
        [
            {
                "id": "note",
                "type": "update",
                "collection": "notes",
                "recordId": {"expr": "args.id"},
                "data": {"text": "edited"},
            }
        ],
    ),
    "swap": (
        [{"name": "id", "type": "string", "required": True}],
        [
            {
                "id": "note",
                "type": "update",
                "collection": "notes",
                "recordId": {"expr": "args.id"},
                "data": {"text": "replaced"},
                "replace": True,
            }
        ],
    ),
}


async def _notes_app(client: AsyncClient, owner: User, apis: tuple[str, ...]) -> tuple[str, str]:
    """(app id, dataset id): a public app with `notes` (text, tag) and `apis`, published 1.0.0."""
    app_id = await new_app(client, owner.headers, "Notes", visibility="public")
    body = {"appId": app_id, "name": "notes", "fields": [TEXT, TAG]}
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    for api in apis:
        params, steps = APIS[api]
        await new_api(client, owner.headers, app_id, api, params=params, steps=steps, price=PRICE)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
    )
    data_of(published)
    return app_id, str(dataset_id["id"])


async def _put_fields(
    client: AsyncClient, owner: User, dataset_id: str, fields: list[Any], query: str = ""
) -> Any:
    return await client.put(
        f"/api/v1/datasets/{dataset_id}{query}",
        json={"name": "notes", "fields": fields},
        headers={**owner.headers, "If-Match": "*"},
    )


async def _deprecate(client: AsyncClient, owner: User, app_id: str, version: str) -> None:
    url = f"/api/v1/apps/{app_id}/versions/{version}"
    data_of(await client.patch(url, json={"deprecated": 1}, headers=owner.headers))


async def _own_records(client: AsyncClient, owner: User, dataset_id: str) -> list[Any]:
    page = data_of(
        await client.get(f"/api/v1/datasets/{dataset_id}/records", headers=owner.headers)
    )
    return [{k: r.get(k) for k in ("text", "tag")} for r in page["list"]]


async def _dataset(client: AsyncClient, owner: User, dataset_id: str) -> Any:
    return data_of(await client.get(f"/api/v1/datasets/{dataset_id}", headers=owner.headers))


async def test_subscribers_values_of_a_removed_field_go_only_with_force(
    client: AsyncClient,
) -> None:
    owner, consumer = await register(client), await register(client)
    app_id, dataset_id = await _notes_app(client, owner, ("add", "list"))
    await _deprecate(client, owner, app_id, "1.0.0")  # `add` names `tag`: retired first
    _, secret = await app_key(client, consumer, app_id)
    data_of(await call(client, secret, app_id, "add", {"text": "theirs", "tag": "x"}))
    add = f"/api/v1/datasets/{dataset_id}/records"
    data_of(await client.post(add, json={"text": "mine", "tag": "own"}, headers=owner.headers))
    before = await _dataset(client, owner, dataset_id)

    for query in ("", "?force=false", "?force=0"):
        data = assert_error(
            await _put_fields(client, owner, dataset_id, [TEXT], query), 409, "field_in_use"
        )
        assert [e["field"] for e in data["errors"]] == ["tag"]
    assert_error(
        await _put_fields(client, owner, dataset_id, [TEXT], "?force=maybe"), 400, "invalid_input"
    )
    assert await _dataset(client, owner, dataset_id) == before  # nothing changed
    assert await _own_records(client, owner, dataset_id) == [{"text": "mine", "tag": "own"}]
    listed = data_of(await call(client, secret, app_id, "list"))
    assert [n["tag"] for n in listed["notes"]["list"]] == ["x"]

    data_of(await _put_fields(client, owner, dataset_id, [TEXT], "?force=true"))
    listed = data_of(await call(client, secret, app_id, "list"))
    assert [(n["text"], n["tag"]) for n in listed["notes"]["list"]] == [("theirs", None)]
    data_of(await _put_fields(client, owner, dataset_id, [TEXT, TAG]))  # added back: empty
    assert await _own_records(client, owner, dataset_id) == [{"text": "mine", "tag": None}]


async def test_the_builders_own_values_of_a_removed_field_go_without_force(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id, dataset_id = await _notes_app(client, owner, ("add", "list"))
    await _deprecate(client, owner, app_id, "1.0.0")
    _, secret = await app_key(client, owner, app_id)
    data_of(await call(client, secret, app_id, "add", {"text": "mine", "tag": "own"}))
    data_of(await _put_fields(client, owner, dataset_id, [TEXT]))
    data_of(await _put_fields(client, owner, dataset_id, [TEXT, TAG]))
    assert await _own_records(client, owner, dataset_id) == [{"text": "mine", "tag": None}]


async def test_a_field_a_published_version_names_is_removed_only_once_it_is_deprecated(
    client: AsyncClient,
) -> None:
    # 1.0.0's `byTag` filters on `tag`: erased, its lookups would silently find nothing.
    owner = await register(client)
    app_id, dataset_id = await _notes_app(client, owner, ("byTag", "list"))
    _, secret = await app_key(client, owner, app_id)
    before = await _dataset(client, owner, dataset_id)
    for query in ("", "?force=true"):  # subscribers' data is not the reason: force changes nothing
        data = assert_error(
            await _put_fields(client, owner, dataset_id, [TEXT, EXTRA], query),
            409,
            "field_in_published_version",
        )
        assert [e["field"] for e in data["errors"]] == ["tag"]
        assert data["errors"][0]["message"] == (
            "published version 1.0.0 uses it (API byTag, steps.notes.filter.tag); "
            "deprecate that version first"
        )
    assert await _dataset(client, owner, dataset_id) == before

    await _deprecate(client, owner, app_id, "1.0.0")
    data_of(await _put_fields(client, owner, dataset_id, [TEXT, EXTRA]))
    # The deprecated version still answers with the schema it was published with, never a 500.
    found = await call(client, secret, app_id, "byTag", {"tag": "x"})
    assert data_of(found)["notes"]["list"] == []
    assert found.headers["Deprecation"].startswith("@")


async def test_a_field_a_published_version_only_returns_can_be_removed(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id, dataset_id = await _notes_app(client, owner, ("list",))
    _, secret = await app_key(client, owner, app_id)
    add = f"/api/v1/datasets/{dataset_id}/records"
    data_of(await client.post(add, json={"text": "mine", "tag": "own"}, headers=owner.headers))
    data_of(await _put_fields(client, owner, dataset_id, [TEXT]))
    listed = data_of(await call(client, secret, app_id, "list"))
    assert [(n["text"], n["tag"]) for n in listed["notes"]["list"]] == [("mine", None)]


@pytest.mark.parametrize("api", ["edit", "swap"])
async def test_a_published_versions_update_keeps_fields_added_since(
    client: AsyncClient, api: str
) -> None:
    # 1.0.0 knows `text` and `tag`; `extra` came later: its update must not erase it.
    owner = await register(client)
    app_id, dataset_id = await _notes_app(client, owner, (api,))
    data_of(await _put_fields(client, owner, dataset_id, [TEXT, TAG, EXTRA]))
    records = f"/api/v1/datasets/{dataset_id}/records"
    body = {"text": "mine", "tag": "own", "extra": 5}
    record_id = data_of(await client.post(records, json=body, headers=owner.headers))["id"]
    _, secret = await app_key(client, owner, app_id)
    answer = data_of(await call(client, secret, app_id, api, {"id": record_id}, version="1.0.0"))
    assert "extra" not in answer["note"]  # the version shows the fields it was published with
    kept = data_of(await client.get(f"{records}/{record_id}", headers=owner.headers))
    assert kept["extra"] == 5
    assert kept["tag"] == ("own" if api == "edit" else None)  # a replacement clears what it knows


async def test_the_force_parameter_of_a_fields_update_is_documented(client: AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/api/v1/datasets/{dataset_id}"]["put"]
    force = next(p for p in operation["parameters"] if p["name"] == "force")
    assert force["in"] == "query"
    assert "field_in_use" in force["description"]
