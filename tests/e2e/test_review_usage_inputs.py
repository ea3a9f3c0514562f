"""Bad input to the request-log and usage routes, and calls whose args no JSON column takes:
a clear 400 (never a 500 from the database), and a call with `NaN` in its args is charged and
logged like any other."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from apiforge.gateway.stages.log import request_log_buffer
from apiforge.usage.models import RequestLog
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register

PRICE = 100
# `n` is an array: a `number` param refuses NaN and infinities itself (400), values inside an
# array or object still reach the call and its request-log row.
PARAMS = [{"name": "n", "type": "array"}, {"name": "s", "type": "string"}]


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/request-logs?appId=%00", "appId"),
        ("/api/v1/request-logs?api=get%00Many", "api"),
        ("/api/v1/request-logs?scope=builder&appId=a%00", "appId"),
        ("/api/v1/usage/calls?appId=%00", "appId"),
        ("/api/v1/usage/calls?appId=%00&chart=pie&scope=builder", "appId"),
    ],
)
async def test_nul_characters_in_log_filters_are_a_400(
    client: AsyncClient, path: str, field: str
) -> None:
    user = await register(client)
    body = assert_error(await client.get(path, headers=user.headers), 400, "invalid_input")
    assert body["errors"] == [{"field": field, "message": "cannot contain NUL characters"}]


async def test_log_filter_errors_are_reported_together(client: AsyncClient) -> None:
    user = await register(client)
    response = await client.get(
        "/api/v1/request-logs",
        params={"api": "a\x00", "from": "yesterday"},
        headers=user.headers,
    )
    fields = [e["field"] for e in assert_error(response, 400, "invalid_input")["errors"]]
    assert fields == ["api", "from"]
    # Plain filters still work.
    page = data_of(await client.get("/api/v1/request-logs?api=x&appId=", headers=user.headers))
    assert page["list"] == []


async def _balance(client: AsyncClient, headers: dict[str, str]) -> int:
    wallets = data_of(await client.get("/api/v1/wallets", headers=headers))["list"]
    [balance] = [w["balance"] for w in wallets if w["kind"] == "balance"]
    return int(balance)


async def _invoke(client: AsyncClient, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    response = await client.post(
        "/api/v1/invocations",
        content=body,
        headers={**headers, "Content-Type": "application/json"},
    )
    result: dict[str, Any] = data_of(response)
    return result


async def test_a_call_with_nan_args_is_charged_and_logged_with_its_neighbours(
    app: FastAPI, client: AsyncClient
) -> None:
    builder, consumer = await register(client), await register(client)
    app_id = await new_app(client, builder.headers, "Numbers", visibility="public")
    steps = [{"id": "o", "type": "set", "value": 1}]
    await new_api(client, builder.headers, app_id, "paid", params=PARAMS, steps=steps, price=PRICE)
    await new_api(client, builder.headers, app_id, "free", params=PARAMS, steps=steps, price=0)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=builder.headers
    )
    data_of(published)
    _, secret = await app_key(client, consumer, app_id)
    key = {"X-Api-Key": secret}
    before = await _balance(client, consumer.headers)

    # JSON bodies may carry NaN and Infinity (the parser accepts them).
    nan = b'{"appId":"%s","api":"%s","args":{"n":%s,"s":"ok"}}'
    paid = nan % (app_id.encode(), b"paid", b"[NaN]")
    assert await _invoke(client, key, paid) == {"o": 1}  # the charge writes its log row too
    assert await _balance(client, consumer.headers) == before - PRICE
    # Buffered rows: one with Infinity between two plain ones, written in one batch.
    plain = nan % (app_id.encode(), b"free", b"[1]")
    for body in (plain, nan % (app_id.encode(), b"free", b"[-Infinity]"), plain):
        assert await _invoke(client, key, body) == {"o": 1}
    buffer = request_log_buffer(app.state.gateway_state)
    await buffer.flush()
    assert len(buffer) == 0  # nothing waits for a retry

    async with app.state.engine.connect() as connection:
        columns = (RequestLog.api, RequestLog.status, RequestLog.args)
        stmt = select(*columns).order_by(RequestLog.created_at)  # ids share milliseconds
        rows = [tuple(row) for row in await connection.execute(stmt)]
    assert rows == [
        ("paid", 200, {"n": [None], "s": "ok"}),
        ("free", 200, {"n": [1], "s": "ok"}),
        ("free", 200, {"n": [None], "s": "ok"}),
        ("free", 200, {"n": [1], "s": "ok"}),
    ]
    listed = data_of(await client.get("/api/v1/request-logs", headers=consumer.headers))
    assert listed["totalCount"] == 4
