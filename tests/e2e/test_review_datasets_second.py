"""Datasets under a second review: record values no backend can store, filters on `version`
beyond 32 bits, long text needles, and concurrent datasets with one name. Each was a 500 (on one
backend or both); now a clear 4xx, or the same answer on SQLite and PostgreSQL."""

import asyncio
from typing import Any

import orjson
import pytest
from httpx import AsyncClient

from tests.e2e._apps import new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

JSON = {"Content-Type": "application/json"}
FIELDS: list[dict[str, Any]] = [
    {"name": "title", "type": "string"},
    {"name": "secret", "type": "string", "encrypted": True},
    {"name": "meta", "type": "object"},
    {"name": "tags", "type": "array"},
]


async def _dataset(
    client: AsyncClient, user: User, fields: list[dict[str, Any]] = FIELDS
) -> tuple[str, str]:
    app_id = await new_app(client, user.headers)
    body = {"appId": app_id, "name": "posts", "fields": fields}
    response = await client.post("/api/v1/datasets", json=body, headers=user.headers)
    return app_id, data_of(response)["id"]


async def _all(client: AsyncClient, user: User, dataset_id: str) -> list[dict[str, Any]]:
    page = data_of(await client.get(f"/api/v1/datasets/{dataset_id}/records", headers=user.headers))
    records: list[dict[str, Any]] = page["list"]
    return records


# (raw record body, field named, message fragment): valid JSON to the request parser, but no
# backend stores it (orjson and PostgreSQL refuse lone surrogates; NaN, infinities and integers
# past 64 bits fit no JSON column).
UNSTORABLE: list[tuple[bytes, str, str]] = [
    (b'{"title": "\\ud800"}', "title", "Unicode"),
    (b'{"secret": "a\\udfffb"}', "secret", "Unicode"),
    (b'{"meta": {"k": "\\ud800"}}', "meta", "Unicode"),
    (b'{"meta": {"\\udfff": 1}}', "meta", "Unicode"),
    (b'{"meta": {"k": NaN}}', "meta", "NaN"),
    (b'{"tags": [1, [Infinity]]}', "tags", "NaN"),
    (b'{"tags": [-Infinity]}', "tags", "NaN"),
    (b'{"meta": {"k": 100000000000000000000000000}}', "meta", "64 bits"),
    (b'{"tags": [-9223372036854775809]}', "tags", "64 bits"),
]


@pytest.mark.parametrize(("body", "field", "fragment"), UNSTORABLE)
async def test_record_values_no_backend_can_store_are_400_and_nothing_changes(
    client: AsyncClient, body: bytes, field: str, fragment: str
) -> None:
    user = await register(client)
    _, dataset_id = await _dataset(client, user)
    url = f"/api/v1/datasets/{dataset_id}/records"
    record_id = data_of(await client.post(url, json={"title": "kept"}, headers=user.headers))["id"]
    before = await _all(client, user, dataset_id)
    headers = {**user.headers, **JSON}
    attempts = [
        await client.post(url, content=body, headers=headers),
        await client.patch(f"{url}/{record_id}", content=body, headers=headers),
        await client.put(
            f"{url}/{record_id}", content=body, headers={**headers, "If-Match": '"1"'}
        ),
    ]
    for response in attempts:
        errors = assert_error(response, 400, "invalid_record")["errors"]
        assert errors == [{"field": field, "message": errors[0]["message"]}], errors
        assert fragment in errors[0]["message"], errors
    assert await _all(client, user, dataset_id) == before


async def test_a_default_no_backend_can_store_is_400(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    for field in (
        b'{"name": "m", "type": "object", "default": {"k": NaN}}',
        b'{"name": "a", "type": "array", "default": [100000000000000000000000]}',
    ):
        body = b'{"appId": "' + app_id.encode() + b'", "name": "posts", "fields": [' + field + b"]}"
        response = await client.post(
            "/api/v1/datasets", content=body, headers={**user.headers, **JSON}
        )
        errors = assert_error(response, 400, "invalid_fields")["errors"]
        assert [e["field"] for e in errors] == ["fields.0.default"], errors
    page = data_of(await client.get("/api/v1/datasets", headers=user.headers))
    assert page["totalCount"] == 0


async def _workflow(
    client: AsyncClient, user: User, app_id: str, steps: list[Any], args: dict[str, Any]
) -> Any:
    body = {"appId": app_id, "steps": steps, "args": args}
    return data_of(await client.post("/api/v1/workflows", json=body, headers=user.headers))


async def test_filters_on_version_take_any_64_bit_integer(client: AsyncClient) -> None:
    """`version` is a 32-bit column; PostgreSQL's driver refused a larger operand (a 500)."""
    user = await register(client)
    app_id, dataset_id = await _dataset(client, user)
    url = f"/api/v1/datasets/{dataset_id}/records"
    for title in ("a", "b"):
        data_of(await client.post(url, json={"title": title}, headers=user.headers))
    cases: list[tuple[dict[str, Any], int]] = [
        ({"_eq": 2**40}, 0),
        ({"_lt": 2**40}, 2),
        ({"_gt": 2**62}, 0),
        ({"_gte": -(2**63)}, 2),
        ({"_between": [1, 2**63 - 1]}, 2),
        ({"_in": [1, 2**33]}, 2),
        ({"_nin": [2**33]}, 2),
    ]
    for condition, count in cases:
        tree = orjson.dumps({"version": condition}).decode()
        response = await client.get(url, params={"filter": tree}, headers=user.headers)
        assert data_of(response)["totalCount"] == count, condition
    # The same in a step, the operand coming from the call's args.
    where = {"version": {"_lt": {"expr": "args.v"}}}
    steps = [{"id": "n", "type": "count", "collection": "posts", "filter": where}]
    assert await _workflow(client, user, app_id, steps, {"v": 2**40}) == {"n": 2}


async def test_text_operators_take_needles_longer_than_sqlite_like_patterns(
    client: AsyncClient,
) -> None:
    """SQLite refuses LIKE patterns past 50,000 bytes (a 500 there, an answer on PostgreSQL);
    both backends give the same answer now, case rules and literal `%`/`_` kept."""
    user = await register(client)
    app_id, dataset_id = await _dataset(client, user)
    url = f"/api/v1/datasets/{dataset_id}/records"
    long = "x" + "a" * 60_000
    for title in (f"<{long}>", f"{long.upper()}!", "50%_off", "50X_off"):
        data_of(await client.post(url, json={"title": title}, headers=user.headers))
    filters = {
        "contains": {"title": {"_contains": {"expr": "args.long"}}},
        "icontains": {"title": {"_icontains": {"expr": "args.long"}}},
        "startsWith": {"title": {"_starts_with": {"expr": "args.long"}}},
        "startsWithUpper": {"title": {"_starts_with": {"expr": "args.long.upperAscii()"}}},
        "literal": {"title": {"_contains": "0%_"}},
        "ilike": {"title": {"_icontains": "0X_O"}},
        "prefix": {"title": {"_starts_with": "50%"}},
    }
    steps = [
        {"id": name, "type": "count", "collection": "posts", "filter": tree}
        for name, tree in filters.items()
    ]
    assert await _workflow(client, user, app_id, steps, {"long": long}) == {
        "contains": 1,
        "icontains": 2,
        "startsWith": 0,
        "startsWithUpper": 1,
        "literal": 1,
        "ilike": 1,
        "prefix": 1,
    }


async def test_concurrent_datasets_with_one_name_get_409_not_500(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    body = {"appId": app_id, "name": "posts", "fields": FIELDS}
    created = await asyncio.gather(
        *(client.post("/api/v1/datasets", json=body, headers=user.headers) for _ in range(4))
    )
    assert sorted(r.status_code for r in created) == [200, 409, 409, 409], [r.text for r in created]
    for response in created:
        if response.status_code == 409:
            errors = assert_error(response, 409, "dataset_name_taken")["errors"]
            assert errors == [{"field": "name", "message": "already exists in this app"}]

    ids = []
    for name in ("drafts", "notes"):
        body = {"appId": app_id, "name": name, "fields": []}
        ids.append(
            data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))["id"]
        )
    renamed = await asyncio.gather(
        *(
            client.put(
                f"/api/v1/datasets/{dataset_id}",
                json={"name": "archive", "fields": []},
                headers={**user.headers, "If-Match": '"1"'},
            )
            for dataset_id in ids
        )
    )
    assert sorted(r.status_code for r in renamed) == [200, 409], [r.text for r in renamed]
    page = data_of(await client.get(f"/api/v1/datasets?appId={app_id}", headers=user.headers))
    names = sorted(d["name"] for d in page["list"])
    assert names.count("posts") == 1
    assert names.count("archive") == 1
    assert len({"drafts", "notes"} & set(names)) == 1
