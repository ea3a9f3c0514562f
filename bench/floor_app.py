"""The floor of `make bench`: the same call, hand-written, with nothing but the work it needs.

One Starlette route, one aiosqlite connection to a copy of apiforge's benchmark database, and per
call exactly what the answer needs: parse the JSON body, verify the end-user JWT the way apiforge
does (HS256, the app's secret, `aud` = the app, `iss`, required claims, the `ws` partition claim),
run the page query and the count that apiforge's `getMany` step runs (same SQL, same index), and
render the same envelope with orjson. No middleware, no pipeline, no pool.

The answer is the same JSON as apiforge's `getManyPost`, which `bench/run.py` checks before the
load test, so the two do the same work. Configured by environment: `BENCH_FLOOR_DB` (the database
copy), `BENCH_FLOOR_APP_ID` and `BENCH_FLOOR_SERVER_KEY` (apiforge's, which seals the app's signing
secret); run it with uvicorn (`uvicorn floor_app:app --app-dir bench`).
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
import jwt
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from apiforge.builder.signing import open_signing_secret
from apiforge.core.settings import Settings

PAGE_SQL = (
    "SELECT id, data, version, created_at, updated_at FROM records "
    "WHERE collection_id = '{collection}' AND partition = ? "
    "AND json_extract(data, '$.published') = 1 "
    "ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?"
)
COUNT_SQL = (
    "SELECT count(*) FROM records WHERE collection_id = '{collection}' AND partition = ? "
    "AND json_extract(data, '$.published') = 1"
)


class Floor:
    """What the process loads once: the connection, the app's secret and the collection."""

    db: aiosqlite.Connection
    app_id: str
    secret: str
    partition: str
    fields: list[str]
    page_sql: str
    count_sql: str


floor = Floor()


def _error(status: int, reason: str, message: str) -> Response:
    body = {"code": status, "message": message, "data": {"error": reason}}
    return Response(orjson.dumps(body), status, media_type="application/json")


def _iso(stored: str) -> str:
    """SQLite keeps `YYYY-MM-DD HH:MM:SS[.ffffff]`; the API shows `YYYY-MM-DDTHH:MM:SSZ`."""
    return f"{stored[:10]}T{stored[11:19]}Z"


def _record(row: Any) -> dict[str, Any]:
    data = orjson.loads(row[1])
    out: dict[str, Any] = {"id": row[0]}
    for name in floor.fields:
        out[name] = data.get(name)
    out["version"] = row[2]
    out["createdTime"] = _iso(row[3])
    out["updatedTime"] = _iso(row[4])
    return out


async def invoke(request: Request) -> Response:
    # One loop turn first, as apiforge's embedded calls take (`GatewayEndpoint._handle`): it
    # does no work, but under load it makes the GIL change hands less often between the loop's
    # thread and aiosqlite's, which made apiforge's call ~10 % cheaper. Without it the floor
    # paid for hand-offs apiforge no longer pays, and stopped bounding what the work needs.
    await asyncio.sleep(0)
    try:
        body = orjson.loads(await request.body())
        page_size = int(body.get("args", {}).get("pageSize", 10))
        page_no = int(body.get("args", {}).get("pageNo", 1))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return _error(400, "invalid_body", "Malformed body")
    if body.get("appId") != floor.app_id or not 1 <= page_size <= 50 or page_no < 1:
        return _error(400, "invalid_arguments", "Invalid arguments")
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _error(401, "token_required", "This API needs an end-user token")
    try:
        claims = jwt.decode(
            token,
            floor.secret,
            algorithms=["HS256"],
            audience=floor.app_id,
            issuer="apiforge",
            options={"require": ["exp", "iat", "sub", "aud", "iss"], "strict_aud": True},
        )
    except jwt.PyJWTError:
        return _error(401, "invalid_token", "Invalid token")
    if claims.get("ws") != floor.partition:
        return _error(401, "token_workspace_mismatch", "Token of another workspace")
    async with floor.db.execute(
        floor.page_sql, (floor.partition, page_size, (page_no - 1) * page_size)
    ) as cursor:
        rows = await cursor.fetchall()
    async with floor.db.execute(floor.count_sql, (floor.partition,)) as cursor:
        (total,) = await cursor.fetchone() or (0,)
    page = {
        "list": [_record(row) for row in rows],
        "pageNo": page_no,
        "pageSize": page_size,
        "totalCount": total,
        "totalPage": math.ceil(total / page_size) if total else 0,
    }
    answer = {"code": 200, "message": "success", "data": {"posts": page}}
    return Response(orjson.dumps(answer), media_type="application/json")


async def health(_request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    floor.app_id = os.environ["BENCH_FLOOR_APP_ID"]
    floor.db = await aiosqlite.connect(os.environ["BENCH_FLOOR_DB"])
    async with floor.db.execute(
        "SELECT signing_secret, workspace_id FROM apps WHERE id = ?", (floor.app_id,)
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise RuntimeError(f"app {floor.app_id} is not in the database")
    # Sealed at rest: opened once here with apiforge's own function and server key.
    server = Settings(secret_key=os.environ["BENCH_FLOOR_SERVER_KEY"])
    floor.secret, floor.partition = open_signing_secret(server, str(row[0])), str(row[1])
    async with floor.db.execute(
        "SELECT id, fields FROM collections WHERE app_id = ? AND name = 'posts'", (floor.app_id,)
    ) as cursor:
        row = await cursor.fetchone()
    if row is None:
        raise RuntimeError("the app has no posts collection")
    collection = str(row[0])
    if not collection.isalnum():  # rendered inline, as apiforge does, for the partial index
        raise RuntimeError(f"unexpected collection id {collection!r}")
    floor.fields = [f["name"] for f in orjson.loads(row[1])]
    floor.page_sql = PAGE_SQL.format(collection=collection)
    floor.count_sql = COUNT_SQL.format(collection=collection)
    try:
        yield
    finally:
        await floor.db.close()


app = Starlette(
    routes=[Route("/invoke", invoke, methods=["POST"]), Route("/health", health)],
    lifespan=lifespan,
)
