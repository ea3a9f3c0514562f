"""Helpers for the idempotency flows: a "hits" app whose calls each insert one record."""

from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select

from apiforge.gateway.stages.idempotency import idempotency_store
from apiforge.idempotency.models import IdempotencyRecord
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import call
from tests.e2e._workspaces import data_of
from tests.factories import User

N = [{"name": "n", "type": "integer", "required": True}]
HIT_STEPS: list[dict[str, Any]] = [
    {"id": "hit", "type": "insert", "collection": "hits", "data": {"n": {"expr": "args.n"}}},
    {"id": "total", "type": "count", "collection": "hits"},
]
APIS: dict[str, dict[str, Any]] = {
    "hit": {"params": N, "steps": HIT_STEPS},
    "strictHit": {"params": N, "steps": HIT_STEPS, "auth": {"requireIdempotencyKey": True}},
    "total": {"steps": [{"id": "total", "type": "count", "collection": "hits"}]},
    "failing": {
        "params": N,
        "steps": [
            *HIT_STEPS,
            {"id": "no", "type": "throw", "status": 409, "error": "nope", "message": "no"},
        ],
    },
}


async def hits_app(client: AsyncClient, owner: User) -> str:
    """A public app with a `hits` collection and `APIS`, published once."""
    app_id = await new_app(client, owner.headers, "Hits", visibility="public")
    body = {"appId": app_id, "name": "hits", "fields": [{"name": "n", "type": "integer"}]}
    data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))
    for api, fields in APIS.items():
        await new_api(client, owner.headers, app_id, api, price=100, **fields)
    response = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
    )
    data_of(response)
    return app_id


async def total(client: AsyncClient, secret: str, app_id: str) -> int:
    """How many times `hit` executed in the caller's partition."""
    count: int = data_of(await call(client, secret, app_id, "total"))["total"]
    return count


async def hit(
    client: AsyncClient, secret: str, app_id: str, n: int = 1, **headers: str
) -> Response:
    return await call(client, secret, app_id, "hit", {"n": n}, headers=headers)


async def stored_answer(app: FastAPI, rid: str) -> tuple[bytes, str]:
    """The stored answer of record `rid` and the payload fingerprint it is kept under, as the
    store keeps them (the answer log or a row)."""
    log = idempotency_store(app.state.gateway_state).log
    if log is not None and log.owner:
        found = log.find(rid)
        if found is not None:
            stored = log.read(found)
            assert stored is not None
            return stored.body, stored.fingerprint
    async with app.state.engine.connect() as conn:
        query = select(IdempotencyRecord.body, IdempotencyRecord.fingerprint).where(
            IdempotencyRecord.id == rid
        )
        body, fingerprint = (await conn.execute(query)).one()
    assert body is not None
    return bytes(body), str(fingerprint)


async def stored_body(app: FastAPI, rid: str) -> bytes:
    """The stored answer of record `rid`."""
    return (await stored_answer(app, rid))[0]
