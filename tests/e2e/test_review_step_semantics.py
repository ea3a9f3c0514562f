"""Review, over HTTP: what the data and control steps do on SQLite and PostgreSQL alike —
upserts racing deletes, aggregate group order, numbers past 64 bits, case folding in filters,
transactions and optimistic locking."""

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest
from httpx import AsyncClient, Response

from apiforge.datasets.schema import CollectionSchema
from apiforge.datasets.store import RecordStore
from tests.e2e._apps import new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

FIELDS = [
    {"name": "name", "type": "string", "unique": True},
    {"name": "n", "type": "integer"},
    {"name": "x", "type": "number"},
    {"name": "flag", "type": "boolean"},
    {"name": "tag", "type": "string"},
    {"name": "extra", "type": "object"},
]
COUNT = {"id": "total", "type": "count", "collection": "items"}


async def _app(client: AsyncClient) -> tuple[User, str]:
    """A new account's app with the `items` collection."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    body = {"appId": app_id, "name": "items", "fields": FIELDS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))
    return user, app_id


async def _run(
    client: AsyncClient, user: User, app_id: str, steps: list[Any], args: Any = None
) -> Response:
    body = {"appId": app_id, "steps": steps, "args": args or {}}
    return await client.post("/api/v1/workflows", json=body, headers=user.headers)


def _insert(step_id: str, **data: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "insert", "collection": "items", "data": data}


def _upsert(**data: Any) -> dict[str, Any]:
    return {"id": "saved", "type": "upsert", "collection": "items", "on": "name", "data": data}


async def _count(client: AsyncClient, user: User, app_id: str) -> int:
    total: int = data_of(await _run(client, user, app_id, [COUNT]))["total"]
    return total


# --- upsert -------------------------------------------------------------------------------------


async def test_an_upsert_whose_record_is_deleted_under_it_inserts_it_again(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user, app_id = await _app(client)
    data_of(await _run(client, user, app_id, [_insert("first", name="k", n=1)]))
    update = RecordStore.update
    deleted: list[str] = []

    async def deleted_first(
        self: RecordStore,
        schema: CollectionSchema,
        partition: str,
        record_id: str,
        data: Mapping[str, Any],
        **options: Any,
    ) -> dict[str, Any]:
        """A concurrent call deletes the record between the upsert's lookup and its update."""
        if not deleted:
            deleted.append(record_id)
            await self.delete(schema, partition, record_id)
        return await update(self, schema, partition, record_id, data, **options)

    monkeypatch.setattr(RecordStore, "update", deleted_first)
    saved = data_of(await _run(client, user, app_id, [_upsert(name="k", n=2), COUNT]))
    assert deleted
    assert (saved["saved"]["name"], saved["saved"]["n"], saved["saved"]["version"]) == ("k", 2, 1)
    assert saved["saved"]["id"] != deleted[0]
    assert saved["total"] == 1


async def test_upserts_racing_a_delete_of_their_record_never_answer_404(
    client: AsyncClient,
) -> None:
    user, app_id = await _app(client)
    for round_no in range(4):
        key = f"k{round_no}"
        inserted = data_of(await _run(client, user, app_id, [_insert("new", name=key)]))
        remove = {
            "id": "gone",
            "type": "delete",
            "collection": "items",
            "recordId": inserted["new"]["id"],
        }
        upserts = [
            _run(client, user, app_id, [_upsert(name=key, n={"expr": "args.n"})], {"n": n})
            for n in range(6)
        ]
        responses = await asyncio.gather(_run(client, user, app_id, [remove]), *upserts)
        for response in responses:
            assert response.status_code == 200, response.json()
        # The old record (updated before the delete) and at most one new one: upserts after
        # the delete all found the record the first of them inserted.
        assert len({data_of(r)["saved"]["id"] for r in responses[1:]}) <= 2
        kept = {"name": {"_eq": key}}
        rows = {"id": "rows", "type": "count", "collection": "items", "filter": kept}
        assert data_of(await _run(client, user, app_id, [rows]))["rows"] <= 1


async def test_twenty_concurrent_upserts_of_one_key_leave_one_record(client: AsyncClient) -> None:
    user, app_id = await _app(client)
    responses = await asyncio.gather(
        *(
            _run(client, user, app_id, [_upsert(name="same", n={"expr": "args.n"})], {"n": n})
            for n in range(20)
        )
    )
    for response in responses:
        assert response.status_code == 200, response.json()
    assert len({data_of(r)["saved"]["id"] for r in responses}) == 1
    assert await _count(client, user, app_id) == 1


# --- aggregate ----------------------------------------------------------------------------------


async def test_aggregate_puts_the_group_without_a_value_last_on_every_backend(
    client: AsyncClient,
) -> None:
    user, app_id = await _app(client)
    rows: list[dict[str, Any]] = [
        {"name": "a", "flag": True, "tag": "x"},
        {"name": "b", "flag": False, "tag": "y"},
        {"name": "c"},
        {"name": "d", "flag": True, "tag": "x"},
    ]
    data_of(await _run(client, user, app_id, [_insert(f"r{i}", **r) for i, r in enumerate(rows)]))

    def by(fields: list[str], limit: int) -> dict[str, Any]:
        metrics = {"posts": {"op": "count"}}
        return {
            "id": "_".join(fields) + str(limit),
            "type": "aggregate",
            "collection": "items",
            "groupBy": fields,
            "metrics": metrics,
            "limit": limit,
        }

    steps = [by(["flag"], 100), by(["flag"], 2), by(["tag", "flag"], 2)]
    data = data_of(await _run(client, user, app_id, steps))
    assert data["flag100"] == [
        {"flag": False, "posts": 1},
        {"flag": True, "posts": 2},
        {"flag": None, "posts": 1},
    ]
    assert data["flag2"] == data["flag100"][:2]
    assert data["tag_flag2"] == [
        {"tag": "x", "flag": True, "posts": 2},
        {"tag": "y", "flag": False, "posts": 1},
    ]


async def test_aggregate_of_numbers_past_64_bits_answers_floats(client: AsyncClient) -> None:
    user, app_id = await _app(client)
    steps = [_insert("a", name="a", x=1e20), _insert("b", name="b", x=2.5e20), _insert("c", x=3)]
    data_of(await _run(client, user, app_id, steps))
    metrics = {
        "sum": {"op": "sum", "field": "x"},
        "max": {"op": "max", "field": "x"},
        "min": {"op": "min", "field": "x"},
    }
    aggregate = {"id": "stats", "type": "aggregate", "collection": "items", "metrics": metrics}
    small = {**aggregate, "id": "small", "filter": {"x": {"_lt": 10}}}
    data = data_of(await _run(client, user, app_id, [aggregate, small]))
    assert data["stats"] == [{"sum": 3.5e20 + 3, "max": 2.5e20, "min": 3}]
    assert data["small"] == [{"sum": 3, "max": 3, "min": 3}]


# --- numbers ------------------------------------------------------------------------------------


async def test_records_holding_floats_past_64_bits_read_back_as_floats(
    client: AsyncClient,
) -> None:
    user, app_id = await _app(client)
    huge = [1e20, 1e300, -2.5e19]
    steps = [
        _insert(f"r{i}", name=f"r{i}", x=value, extra={"x": value, "list": [value]})
        for i, value in enumerate(huge)
    ]
    data_of(await _run(client, user, app_id, steps))
    reads = [
        {"id": "page", "type": "getMany", "collection": "items", "sort": ["name"]},
        {"id": "one", "type": "getOne", "collection": "items", "filter": {"name": {"_eq": "r1"}}},
        {"id": "doubled", "type": "set", "value": {"expr": "steps.one.x * 2.0"}},
    ]
    data = data_of(await _run(client, user, app_id, reads))
    assert [(r["x"], r["extra"]) for r in data["page"]["list"]] == [
        (value, {"x": value, "list": [value]}) for value in huge
    ]
    assert data["one"]["x"] == 1e300
    assert data["doubled"] == 2e300
    listed = data_of(
        await client.get(
            f"/api/v1/datasets/{await _dataset(client, user, app_id)}/records", headers=user.headers
        )
    )
    assert sorted(r["x"] for r in listed["list"]) == sorted(huge)


async def _dataset(client: AsyncClient, user: User, app_id: str) -> str:
    page = data_of(
        await client.get("/api/v1/datasets", params={"appId": app_id}, headers=user.headers)
    )
    dataset_id: str = page["list"][0]["id"]
    return dataset_id


# --- filters ------------------------------------------------------------------------------------


async def test_icontains_folds_final_sigma_and_dotted_capital_i_as_postgresql_does(
    client: AsyncClient,
) -> None:
    user, app_id = await _app(client)
    names = ["ΟΔΟΣ ΠΑΝΟΣ", "İSTANBUL", "Straße"]
    data_of(
        await _run(client, user, app_id, [_insert(f"r{i}", tag=t) for i, t in enumerate(names)])
    )
    needles = {"sigma": "οδοσ", "final": "οδος", "dotted": "istanbul", "sharp": "straße"}
    steps = [
        {"id": key, "type": "count", "collection": "items", "filter": {"tag": {"_icontains": text}}}
        for key, text in needles.items()
    ]
    data = data_of(await _run(client, user, app_id, steps))
    assert data == {"sigma": 1, "final": 0, "dotted": 1, "sharp": 1}


# --- transactions and locking ------------------------------------------------------------------


async def test_a_throw_rolls_back_every_write_of_the_call_and_a_continued_group_alone(
    client: AsyncClient,
) -> None:
    user, app_id = await _app(client)
    throw = {"id": "boom", "type": "throw", "status": 409, "error": "boom"}
    group = {"id": "group", "type": "transaction", "steps": [_insert("a", name="a"), throw]}
    assert_error(await _run(client, user, app_id, [group]), 409, "boom")
    committed = {"id": "group", "type": "transaction", "steps": [_insert("a", name="a")]}
    assert_error(
        await _run(client, user, app_id, [_insert("b", name="b"), committed, throw]), 409, "boom"
    )
    assert await _count(client, user, app_id) == 0
    continued = {**group, "onError": "continue"}
    data = data_of(await _run(client, user, app_id, [continued, _insert("c", name="c"), COUNT]))
    assert data["group"] == {
        "committed": False,
        "error": {"error": "boom", "message": "Request refused", "stepId": "boom"},
    }
    assert "a" not in data
    assert data["total"] == 1


async def test_a_stale_update_is_a_409_and_changes_nothing(client: AsyncClient) -> None:
    user, app_id = await _app(client)
    record = data_of(await _run(client, user, app_id, [_insert("new", name="a", n=1)]))["new"]
    edit = {
        "id": "edit",
        "type": "update",
        "collection": "items",
        "recordId": record["id"],
        "version": {"expr": "args.version"},
        "data": {"n": {"expr": "args.n"}},
    }
    assert (
        data_of(await _run(client, user, app_id, [edit], {"version": 1, "n": 2}))["edit"]["n"] == 2
    )
    stale = await _run(client, user, app_id, [edit], {"version": 1, "n": 3})
    assert assert_error(stale, 409, "version_conflict") == {
        "error": "version_conflict",
        "currentVersion": 2,
        "stepId": "edit",
    }
    read = {"id": "one", "type": "getOne", "collection": "items", "recordId": record["id"]}
    now = data_of(await _run(client, user, app_id, [read]))["one"]
    assert (now["n"], now["version"]) == (2, 2)
