"""Review, over HTTP: the engine's data, call, auth and control steps under concurrency and
hostile input."""

import asyncio
from typing import Any

from httpx import AsyncClient

from tests.e2e._apps import new_api, new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

USERS = [
    {"name": "email", "type": "string", "unique": True},
    {"name": "visits", "type": "integer"},
]


async def _collection(client: AsyncClient, user: User, app_id: str) -> str:
    body = {"appId": app_id, "name": "users", "fields": USERS}
    created = data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))
    return str(created["id"])


async def _workflow(
    client: AsyncClient, user: User, app_id: str, steps: list[dict[str, Any]], args: Any
) -> Any:
    body = {"appId": app_id, "steps": steps, "args": args}
    return await client.post("/api/v1/workflows", json=body, headers=user.headers)


async def test_concurrent_upserts_of_one_key_all_succeed_on_one_record(
    client: AsyncClient,
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    dataset_id = await _collection(client, user, app_id)
    for round_no in range(3):
        email = f"r{round_no}@example.com"
        step = {
            "id": "saved",
            "type": "upsert",
            "collection": "users",
            "on": "email",
            "data": {"email": email, "visits": {"expr": "args.n"}},
        }
        responses = await asyncio.gather(
            *(_workflow(client, user, app_id, [step], {"n": n}) for n in range(6))
        )
        for response in responses:
            assert response.status_code == 200, response.json()
        ids = {data_of(r)["saved"]["id"] for r in responses}
        assert len(ids) == 1
        listed = data_of(
            await client.get(
                f"/api/v1/datasets/{dataset_id}/records",
                params={"pageSize": 100},
                headers=user.headers,
            )
        )
        assert [r["email"] for r in listed["list"]].count(email) == 1


async def test_concurrent_updates_without_a_version_all_apply(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    fields = [{"name": f"f{i}", "type": "integer"} for i in range(6)]
    body = {"appId": app_id, "name": "users", "fields": fields}
    data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))
    insert = {"id": "new", "type": "insert", "collection": "users", "data": {}}
    record_id = data_of(await _workflow(client, user, app_id, [insert], {}))["new"]["id"]
    responses = await asyncio.gather(
        *(
            _workflow(
                client,
                user,
                app_id,
                [
                    {
                        "id": "edit",
                        "type": "update",
                        "collection": "users",
                        "recordId": record_id,
                        "data": {f"f{i}": i},
                    }
                ],
                {},
            )
            for i in range(6)
        )
    )
    for response in responses:
        assert response.status_code == 200, response.json()
    read = {"id": "one", "type": "getOne", "collection": "users", "recordId": record_id}
    record = data_of(await _workflow(client, user, app_id, [read], {}))["one"]
    assert {f"f{i}": record[f"f{i}"] for i in range(6)} == {f"f{i}": i for i in range(6)}
    assert record["version"] == 7


async def test_concurrent_upserts_inside_transactions_all_succeed(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await _collection(client, user, app_id)
    step = {
        "id": "group",
        "type": "transaction",
        "steps": [
            {
                "id": "saved",
                "type": "upsert",
                "collection": "users",
                "on": "email",
                "data": {"email": "t@example.com", "visits": {"expr": "args.n"}},
            }
        ],
    }
    responses = await asyncio.gather(
        *(_workflow(client, user, app_id, [step], {"n": n}) for n in range(6))
    )
    for response in responses:
        assert response.status_code == 200, response.json()
    assert len({data_of(r)["saved"]["id"] for r in responses}) == 1


async def test_concurrent_transactions_that_read_then_write_all_commit(
    client: AsyncClient,
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await _collection(client, user, app_id)
    group = {
        "id": "group",
        "type": "transaction",
        "steps": [
            {"id": "before", "type": "count", "collection": "users"},
            {
                "id": "added",
                "type": "insert",
                "collection": "users",
                "data": {"visits": {"expr": "args.n"}},
            },
        ],
    }
    responses = await asyncio.gather(
        *(_workflow(client, user, app_id, [group], {"n": n}) for n in range(8))
    )
    for response in responses:
        assert response.status_code == 200, response.json()
    count = {"id": "n", "type": "count", "collection": "users"}
    assert data_of(await _workflow(client, user, app_id, [count], {}))["n"] == 8


async def test_an_upsert_whose_other_unique_value_is_taken_is_still_a_conflict(
    client: AsyncClient,
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    fields = [
        {"name": "email", "type": "string", "unique": True},
        {"name": "handle", "type": "string", "unique": True},
    ]
    body = {"appId": app_id, "name": "users", "fields": fields}
    data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))

    def upsert(email: str) -> dict[str, Any]:
        data = {"email": email, "handle": "ada"}
        return {"id": "saved", "type": "upsert", "collection": "users", "on": "email", "data": data}

    assert data_of(await _workflow(client, user, app_id, [upsert("a@example.com")], {}))
    taken = await _workflow(client, user, app_id, [upsert("b@example.com")], {})
    assert_error(taken, 409, "duplicate_value")
    count = {"id": "n", "type": "count", "collection": "users"}
    assert data_of(await _workflow(client, user, app_id, [count], {}))["n"] == 1


async def test_concurrent_gateway_calls_upserting_one_key_all_succeed(
    client: AsyncClient,
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await _collection(client, user, app_id)
    steps = [
        {
            "id": "saved",
            "type": "upsert",
            "collection": "users",
            "on": "email",
            "data": {"email": {"expr": "args.email"}, "visits": {"expr": "args.n"}},
        },
        {
            "id": "group",
            "type": "transaction",
            "steps": [
                {"id": "seen", "type": "count", "collection": "users"},
                {
                    "id": "again",
                    "type": "upsert",
                    "collection": "users",
                    "on": "email",
                    "data": {"email": {"expr": "args.email + '.2'"}},
                },
            ],
        },
    ]
    params = [
        {"name": "email", "type": "string", "required": True},
        {"name": "n", "type": "integer", "required": True},
    ]
    await new_api(client, user.headers, app_id, "visit", params=params, steps=steps, price=1000)

    async def visit(n: int) -> Any:
        args = {"email": "g@example.com", "n": n}
        body = {"appId": app_id, "api": "visit", "version": "dev", "args": args}
        return await client.post("/api/v1/invocations", json=body, headers=user.headers)

    responses = await asyncio.gather(*(visit(n) for n in range(6)))
    for response in responses:
        assert response.status_code == 200, response.json()
    assert len({data_of(r)["saved"]["id"] for r in responses}) == 1
    assert len({data_of(r)["again"]["id"] for r in responses}) == 1


async def test_concurrent_updates_of_one_version_let_exactly_one_win(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await _collection(client, user, app_id)
    insert = {"id": "new", "type": "insert", "collection": "users", "data": {"visits": 0}}
    record_id = data_of(await _workflow(client, user, app_id, [insert], {}))["new"]["id"]
    edit = {
        "id": "edit",
        "type": "update",
        "collection": "users",
        "recordId": record_id,
        "version": 1,
        "data": {"visits": {"expr": "args.n"}},
    }
    responses = await asyncio.gather(
        *(_workflow(client, user, app_id, [edit], {"n": n}) for n in range(1, 7))
    )
    won = [r for r in responses if r.status_code == 200]
    assert len(won) == 1
    for lost in (r for r in responses if r.status_code != 200):
        assert assert_error(lost, 409, "version_conflict")["currentVersion"] == 2
    read = {"id": "one", "type": "getOne", "collection": "users", "recordId": record_id}
    record = data_of(await _workflow(client, user, app_id, [read], {}))["one"]
    assert (record["visits"], record["version"]) == (data_of(won[0])["edit"]["visits"], 2)
