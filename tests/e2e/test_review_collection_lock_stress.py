"""Record writes and schema changes under load, for a bounded time: gateway calls writing records
in two collections (in both orders, one then granting a right of the app's user system, an
update, a delete then an insert) while one collection's fields are removed, added back, retyped
and (un)indexed over and over, and the other is deleted and created again. No request answers
5xx (PostgreSQL's deadlock_detected is a 500); a removed field keeps no value; every value
stored is of its field's type."""

import asyncio
import itertools
import random
import time
from collections import Counter
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select

from apiforge.datasets.models import Record
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import call, create_key
from tests.e2e._workspaces import data_of
from tests.factories import User, register

pytestmark = pytest.mark.anyio

SECONDS = 6.0  # per backend; each loop stops at its first request after it
CALLERS = 6

TEXT: dict[str, Any] = {"name": "text", "type": "string", "required": True}
TAG: dict[str, Any] = {"name": "tag", "type": "string", "indexed": True}
EXTRA: dict[str, Any] = {"name": "extra", "type": "string"}
SPARE: dict[str, Any] = {"name": "spare", "type": "string"}
# `a`'s schemas, in turn: `extra` (which calls write) removed and added back, `spare` (which
# none writes) retyped and indexed; each step to the next drops, builds or keeps indexes.
A_SCHEMAS: list[list[dict[str, Any]]] = [
    [TEXT, TAG, EXTRA, SPARE],
    [TEXT, TAG, SPARE],
    [TEXT, TAG, EXTRA, {**SPARE, "type": "integer"}],
    [TEXT, TAG, EXTRA, {**SPARE, "type": "integer", "indexed": True}],
    [TEXT, {**TAG, "indexed": False}, SPARE],
    [TEXT, TAG, EXTRA],
]
B_FIELDS = [TEXT, TAG]
ID = {"name": "id", "type": "string", "required": True, "max": 64}


def _insert(step: str, collection: str, extra: bool) -> dict[str, Any]:
    data: dict[str, Any] = {"text": "n", "tag": "t"}
    if extra:
        data["extra"] = "x"
    return {"id": step, "type": "insert", "collection": collection, "data": data}


APIS: dict[str, tuple[list[Any], list[Any]]] = {
    "writeAB": ([], [_insert("a", "a", True), _insert("b", "b", False)]),
    "writeBA": (  # then a right of the app's user system: its row refers to the app
        [],
        [
            _insert("b", "b", False),
            _insert("a", "a", True),
            {"id": "r", "type": "userRight", "action": "grant", "userId": "u", "rights": ["r"]},
        ],
    ),
    "editA": (
        [ID],
        [
            {
                "id": "a",
                "type": "update",
                "collection": "a",
                "recordId": {"expr": "args.id"},
                "data": {"extra": "y", "tag": "u"},
            }
        ],
    ),
    "swapA": (
        [ID],
        [
            {"id": "gone", "type": "delete", "collection": "a", "recordId": {"expr": "args.id"}},
            _insert("a", "a", True),
        ],
    ),
}


async def _dataset(client: AsyncClient, owner: User, app_id: str, name: str, fields: Any) -> str:
    body = {"appId": app_id, "name": name, "fields": fields}
    created = await client.post("/api/v1/datasets", json=body, headers=owner.headers)
    return str(data_of(created)["id"])


async def test_record_writes_and_schema_changes_under_load_never_fail_or_deadlock(
    client: AsyncClient, app: FastAPI
) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Two collections")
    a_id = await _dataset(client, owner, app_id, "a", A_SCHEMAS[0])
    b_id = await _dataset(client, owner, app_id, "b", B_FIELDS)
    for api, (params, steps) in APIS.items():
        await new_api(client, owner.headers, app_id, api, params=params, steps=steps, price=100)
    _, secret = await create_key(client, owner.headers, type="ws", role="admin")
    seeded = data_of(await call(client, secret, app_id, "writeAB", version="dev"))
    a_ids = [str(seeded["a"]["id"])]
    statuses: dict[str, Counter[int]] = {}
    deadline = time.monotonic() + SECONDS
    rng = random.Random(7)

    def seen(kind: str, response: Response) -> Response:
        statuses.setdefault(kind, Counter())[response.status_code] += 1
        assert response.status_code < 500, (kind, response.text)
        return response

    async def caller() -> None:
        while time.monotonic() < deadline:
            api = rng.choice(list(APIS))
            args = {"id": rng.choice(a_ids)} if api in ("editA", "swapA") else {}
            answer = seen(api, await call(client, secret, app_id, api, args, version="dev"))
            if answer.status_code == 200 and "a" in (body := answer.json()["data"]):
                a_ids.append(str(body["a"]["id"]))

    async def change_a() -> None:
        headers = {**owner.headers, "If-Match": "*"}
        for fields in itertools.cycle(A_SCHEMAS[1:] + A_SCHEMAS[:1]):
            if time.monotonic() >= deadline:
                return
            body = {"name": "a", "fields": fields}
            changed = seen(
                "changeA", await client.put(f"/api/v1/datasets/{a_id}", json=body, headers=headers)
            )
            if changed.status_code == 200 and EXTRA not in fields:
                assert await _holding(app, a_id, "extra") == 0  # nothing kept a removed value

    async def recreate_b() -> None:
        nonlocal b_id
        while time.monotonic() < deadline:
            gone = await client.delete(f"/api/v1/datasets/{b_id}", headers=owner.headers)
            seen("deleteB", gone)
            b_id = await _dataset(client, owner, app_id, "b", B_FIELDS)

    await asyncio.gather(*(caller() for _ in range(CALLERS)), change_a(), recreate_b())

    assert statuses["changeA"][200] > 1, statuses
    assert sum(statuses[api][200] for api in APIS) > CALLERS, statuses
    final = data_of(await client.get(f"/api/v1/datasets/{a_id}", headers=owner.headers))
    kinds = {f["name"]: f["type"] for f in final["fields"]}
    async with app.state.engine.connect() as connection:
        stored = (
            await connection.execute(select(Record.data).where(Record.collection_id == a_id))
        ).scalars()
        for data in stored:
            assert "spare" not in data, data  # never written
            assert set(data) <= set(kinds), (data, kinds)  # no value of a removed field
            assert all(isinstance(v, str) for v in data.values()), data  # all string fields


async def _holding(app: FastAPI, collection_id: str, name: str) -> int:
    """How many of the collection's records hold a value of field `name`."""
    async with app.state.engine.connect() as connection:
        stored = await connection.execute(
            select(Record.data).where(Record.collection_id == collection_id)
        )
        return sum(name in data for data in stored.scalars())
