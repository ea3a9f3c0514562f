"""Review of the gateway's stages, over HTTP: `number` args that are not finite numbers (`NaN`,
`Infinity`, `1e400`, which the body parser accepts) and `integer` args beyond 64 bits are a 400
naming the param, before any step runs; calls made at once with M calls left in the month's
quota let exactly M through."""

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.gateway.context import GatewayContext
from apiforge.gateway.stages.log import request_log_buffer
from apiforge.gateway.stages.run import RunStage
from tests.e2e._apps import new_api, new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, make_admin, register

URL = "/api/v1/invocations"
PARAMS = [
    {"name": "amount", "type": "number", "min": 1, "max": 100},
    {"name": "ratio", "type": "number"},
    {"name": "count", "type": "integer"},
]
INSERT = {
    "id": "hit",
    "type": "insert",
    "collection": "hits",
    "data": {"amount": {"expr": "args.amount"}, "count": {"expr": "args.count"}},
}


async def _hits_app(client: AsyncClient) -> tuple[dict[str, str], bytes]:
    """A `dev` API `hit` that stores its args in a `hits` collection, an API `total` counting
    them, and the start of a raw call body (the args that JSON encoders refuse are sent raw)."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    fields = [{"name": "amount", "type": "number"}, {"name": "count", "type": "integer"}]
    body = {"appId": app_id, "name": "hits", "fields": fields}
    data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))
    await new_api(client, user.headers, app_id, "hit", params=PARAMS, steps=[INSERT], price=100)
    total = {"id": "total", "type": "count", "collection": "hits"}
    await new_api(client, user.headers, app_id, "total", steps=[total], price=100)
    start = f'{{"appId": "{app_id}", "version": "dev", "api": "hit", "args": '.encode()
    return {**user.headers, "Content-Type": "application/json"}, start


async def _stored(client: AsyncClient, headers: dict[str, str], start: bytes) -> Any:
    body = start.replace(b'"hit"', b'"total"') + b"{}}"
    return data_of(await client.post(URL, content=body, headers=headers))["total"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (b'{"amount": NaN}', "amount"),  # passed min 1 / max 100: every comparison is false
        (b'{"ratio": NaN}', "ratio"),
        (b'{"ratio": Infinity}', "ratio"),
        (b'{"ratio": -Infinity}', "ratio"),
        (b'{"ratio": 1e400}', "ratio"),
    ],
)
async def test_a_number_arg_that_is_not_finite_is_400(
    client: AsyncClient, args: bytes, field: str
) -> None:
    headers, start = await _hits_app(client)
    response = await client.post(URL, content=start + args + b"}", headers=headers)
    data = assert_error(response, 400, "invalid_arguments")
    assert data["errors"] == [{"field": field, "message": "must be a finite number"}]
    assert await _stored(client, headers, start) == 0


@pytest.mark.parametrize(
    "value",
    [b"9223372036854775808", b"-9223372036854775809", b"123456789012345678901234567890", b"1e300"],
)
async def test_an_integer_arg_beyond_64_bits_is_400(client: AsyncClient, value: bytes) -> None:
    """It reached the steps as a rounded float: -2^63-1 was stored as -2^63."""
    headers, start = await _hits_app(client)
    response = await client.post(
        URL, content=start + b'{"count": ' + value + b"}}", headers=headers
    )
    data = assert_error(response, 400, "invalid_arguments")
    assert data["errors"][0]["field"] == "count"
    assert "between -9223372036854775808 and 9223372036854775807" in data["errors"][0]["message"]
    assert await _stored(client, headers, start) == 0


async def test_finite_numbers_and_64_bit_integers_still_pass(client: AsyncClient) -> None:
    headers, start = await _hits_app(client)
    for args, stored in (
        (b'{"amount": 1.5, "count": 9223372036854775807}', (1.5, 2**63 - 1)),
        (b'{"amount": 100, "count": -9223372036854775808}', (100, -(2**63))),
        (b'{"amount": 2, "ratio": 1e308, "count": 5.0}', (2, 5)),
    ):
        record = data_of(await client.post(URL, content=start + args + b"}", headers=headers))
        assert (record["hit"]["amount"], record["hit"]["count"]) == stored
    assert await _stored(client, headers, start) == 3


# --- callsPerMonth under concurrency ------------------------------------------------------------


async def _on_calls_plan(app: FastAPI, client: AsyncClient, owner: User, calls: int) -> None:
    admin = await make_admin(app, client)
    body = {"code": "few", "name": "Few", "quotas": {"callsPerMonth": calls}}
    plan = data_of(await client.post("/api/v1/admin/plans", json=body, headers=admin.headers))
    moved = await client.put(
        f"/api/v1/admin/workspaces/{owner.workspace_id}/plan",
        json={"planId": plan["id"]},
        headers=admin.headers,
    )
    data_of(moved)


async def _used(client: AsyncClient, owner: User) -> int:
    plans = data_of(await client.get("/api/v1/user/plans", headers=owner.headers))
    used: int = next(u for u in plans["usage"] if u["quota"] == "callsPerMonth")["used"]
    return used


async def test_concurrent_calls_with_m_left_let_exactly_m_through(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call was counted only once it ended, so every call checked while others ran passed."""
    run = RunStage.on_request

    async def slow_run(self: RunStage, ctx: GatewayContext) -> None:
        await asyncio.sleep(0.05)  # the calls are all running at once
        await run(self, ctx)

    monkeypatch.setattr(RunStage, "on_request", slow_run)
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    ping = [{"id": "n", "type": "set", "value": 0}]
    await new_api(client, owner.headers, app_id, "ping", steps=ping)
    failing = [{"id": "no", "type": "throw", "status": 409, "error": "nope", "message": "no"}]
    await new_api(client, owner.headers, app_id, "fail", steps=failing)
    await _on_calls_plan(app, client, owner, calls=3)

    def call(api: str) -> Any:
        body = {"appId": app_id, "api": api, "version": "dev", "args": {}}
        return client.post("/api/v1/invocations", json=body, headers=owner.headers)

    assert data_of(await call("ping")) == {"n": 0}  # 2 left; the meter is loaded
    # Failed calls hold places while they run, and give them back: they never count.
    for _ in range(2):
        failed: list[Response] = await asyncio.gather(call("fail"), call("fail"))
        assert [r.status_code for r in failed] == [409, 409]
    answers: list[Response] = await asyncio.gather(*(call("ping") for _ in range(8)))
    assert sorted(r.status_code for r in answers) == [200] * 2 + [403] * 6
    for refused in (r for r in answers if r.status_code == 403):
        data = assert_error(refused, 403, "quota_exceeded")
        assert (data["quota"], data["limit"]) == ("callsPerMonth", 3)
    assert_error(await call("ping"), 403, "quota_exceeded")
    await request_log_buffer(app.state.gateway_state).flush()
    assert await _used(client, owner) == 3
