"""Datasets under a third review: number values the backends compare differently, field names a
filter can never reach, and the bytes of a removed field's values still counted as storage."""

from typing import Any

import orjson
import pytest
from httpx import AsyncClient

from tests.e2e._apps import new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register


async def _dataset(client: AsyncClient, user: User, fields: list[dict[str, Any]]) -> str:
    app_id = await new_app(client, user.headers)
    body = {"appId": app_id, "name": "posts", "fields": fields}
    dataset_id: str = data_of(
        await client.post("/api/v1/datasets", json=body, headers=user.headers)
    )["id"]
    return dataset_id


async def _records(
    client: AsyncClient, user: User, dataset_id: str, tree: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    params = {"sort": "x", "order": "asc"}
    if tree is not None:
        params["filter"] = orjson.dumps(tree).decode()
    url = f"/api/v1/datasets/{dataset_id}/records"
    records: list[dict[str, Any]] = data_of(
        await client.get(url, params=params, headers=user.headers)
    )["list"]
    return records


async def test_number_fields_refuse_integers_a_double_cannot_hold(client: AsyncClient) -> None:
    """PostgreSQL compares number fields as doubles, SQLite exactly: 2**53 + 1 was a second
    value for a unique field on SQLite and a duplicate of 2**53 on PostgreSQL (and a filter for
    it found it on one backend only). Such integers are refused; the rest behave alike."""
    user = await register(client)
    dataset_id = await _dataset(client, user, [{"name": "x", "type": "number", "unique": True}])
    url = f"/api/v1/datasets/{dataset_id}/records"
    for value in (2**53, 2**60, -(2**63), 0.5):
        data_of(await client.post(url, json={"x": value}, headers=user.headers))
    before = await _records(client, user, dataset_id)
    for value in (2**53 + 1, -(2**53) - 1, 2**63 - 1):
        errors = assert_error(
            await client.post(url, json={"x": value}, headers=user.headers), 400, "invalid_record"
        )["errors"]
        assert [e["field"] for e in errors] == ["x"], errors
        assert "integer field" in errors[0]["message"]
        response = await client.patch(
            f"{url}/{before[0]['id']}", json={"x": value}, headers=user.headers
        )
        assert_error(response, 400, "invalid_record")
    assert await _records(client, user, dataset_id) == before
    assert [r["x"] for r in before] == [-(2**63), 0.5, 2**53, 2**60]
    found = await _records(client, user, dataset_id, {"x": {"_eq": 2**60}})
    assert [r["x"] for r in found] == [2**60]
    found = await _records(client, user, dataset_id, {"x": {"_gt": 2**53}})
    assert [r["x"] for r in found] == [2**60]
    # A default is checked as a value.
    app_id = await new_app(client, user.headers)
    body = {
        "appId": app_id,
        "name": "d",
        "fields": [{"name": "x", "type": "number", "default": 2**53 + 1}],
    }
    errors = assert_error(
        await client.post("/api/v1/datasets", json=body, headers=user.headers),
        400,
        "invalid_fields",
    )["errors"]
    assert [e["field"] for e in errors] == ["fields.0.default"]


@pytest.mark.parametrize("name", ["_eq", "_in", "_null", "_between", "_contains", "_icontains"])
async def test_fields_named_after_filter_operators_are_refused(
    client: AsyncClient, name: str
) -> None:
    """A filter reads `{"_eq": ...}` as a misplaced operator, so a field named `_eq` could be
    defined and written but never filtered on (as `_and` could not, which was refused)."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    fields = [{"name": "title", "type": "string"}, {"name": name, "type": "string"}]
    body = {"appId": app_id, "name": "posts", "fields": fields}
    response = await client.post("/api/v1/datasets", json=body, headers=user.headers)
    errors = assert_error(response, 400, "invalid_fields")["errors"]
    assert errors == [{"field": "fields.1.name", "message": f"'{name}' is a filter operator"}]
    page = data_of(await client.get("/api/v1/datasets", headers=user.headers))
    assert page["totalCount"] == 0
    # Names that merely start with an underscore stay valid, and filterable.
    fields[1]["name"] = "_meta"
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))[
        "id"
    ]
    url = f"/api/v1/datasets/{dataset_id}/records"
    data_of(await client.post(url, json={"_meta": "m"}, headers=user.headers))
    tree = orjson.dumps({"_meta": {"_eq": "m"}}).decode()
    assert (
        data_of(await client.get(url, params={"filter": tree}, headers=user.headers))["totalCount"]
        == 1
    )


async def _storage_used(client: AsyncClient, user: User) -> int:
    plans = data_of(await client.get("/api/v1/user/plans", headers=user.headers))
    used: int = next(u["used"] for u in plans["usage"] if u["quota"] == "storageBytes")
    return used


async def test_removing_a_field_frees_its_bytes_in_storage_usage(client: AsyncClient) -> None:
    """Erasing a removed field's values left each record's measured size as it was, so the
    `storageBytes` usage (and its quota) kept counting bytes no record held any more."""
    user = await register(client)
    fields = [{"name": "title", "type": "string"}, {"name": "body", "type": "string"}]
    dataset_id = await _dataset(client, user, fields)
    url = f"/api/v1/datasets/{dataset_id}/records"
    ids = [
        data_of(
            await client.post(
                url, json={"title": f"t{i}", "body": "é" * 5000}, headers=user.headers
            )
        )["id"]
        for i in range(3)
    ]
    data_of(await client.post(url, json={"title": "short"}, headers=user.headers))
    # A key holding null is the field's too: erased as well.
    data_of(await client.post(url, json={"title": "nul", "body": None}, headers=user.headers))
    assert await _storage_used(client, user) > 30_000
    dataset = await client.get(f"/api/v1/datasets/{dataset_id}", headers=user.headers)
    body = {"name": "posts", "fields": [fields[0]]}
    headers = {**user.headers, "If-Match": dataset.headers["ETag"]}
    data_of(await client.put(f"/api/v1/datasets/{dataset_id}", json=body, headers=headers))
    expected = sum(len(orjson.dumps({"title": t})) for t in ("t0", "t1", "t2", "short", "nul"))
    assert await _storage_used(client, user) == expected
    record = data_of(await client.get(f"{url}/{ids[0]}", headers=user.headers))
    assert record["title"] == "t0"
    assert "body" not in record
    # A later write measures the record the same way: usage does not move.
    data_of(await client.patch(f"{url}/{ids[0]}", json={"title": "t0"}, headers=user.headers))
    assert await _storage_used(client, user) == expected


@pytest.mark.parametrize("order", [None, "asc", "desc"])
async def test_a_sort_key_is_a_field_name_and_order_its_direction(
    client: AsyncClient, order: str | None
) -> None:
    """`sort=-x` was read as the steps' "descending" spelling: `order=asc` then listed records
    descending, and `order=desc` was a 400. A record list sorts by `sort` in `order` only."""
    user = await register(client)
    dataset_id = await _dataset(client, user, [{"name": "x", "type": "integer"}])
    url = f"/api/v1/datasets/{dataset_id}/records"
    for value in (1, 2):
        data_of(await client.post(url, json={"x": value}, headers=user.headers))
    params = {"sort": "-x"} if order is None else {"sort": "-x", "order": order}
    errors = assert_error(
        await client.get(url, params=params, headers=user.headers), 400, "invalid_sort_field"
    )["errors"]
    assert errors == [{"field": "sort", "message": "cannot sort by '-x'"}]
