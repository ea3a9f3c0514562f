"""Review, over HTTP: a `debug` dev call spends what the same call spends without it, and an
expression whose result JSON cannot carry fails clearly instead of answering a changed value."""

from typing import Any

import pytest
from httpx import AsyncClient

from apiforge.engine.base import CALL_LIMITS
from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register

# Each `log` input about 0.9 MB: 20 of them fit the call's expression budget once (32 MB), not
# twice, which is what a debug call spent when its trace evaluated every input a second time.
SIZE = 900_000
ITEMS = 20


async def _call(client: AsyncClient, steps: list[Any], **body: Any) -> Any:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    params = [{"name": "s"}, {"name": "ids", "type": "array"}]
    await new_api(client, user.headers, app_id, "probe", steps=steps, params=params)
    payload = {"appId": app_id, "api": "probe", "version": "dev", **body}
    return await client.post("/api/v1/invocations", json=payload, headers=user.headers)


async def test_a_debug_call_fits_the_budget_the_same_call_fits(client: AsyncClient) -> None:
    assert ITEMS * SIZE < CALL_LIMITS.max_expression_chars < 2 * ITEMS * SIZE
    loop = {
        "id": "each",
        "type": "forEach",
        "items": {"expr": "args.ids"},
        "maxIterations": ITEMS,
        "steps": [{"id": "say", "type": "log", "message": {"expr": "args.s"}}],
        "collect": 1,
    }
    args = {"s": "x" * SIZE, "ids": list(range(ITEMS))}
    plain = data_of(await _call(client, [loop], args=args))
    assert plain == {"each": [1] * ITEMS}
    debug = data_of(await _call(client, [loop], args=args, debug=1))
    assert debug["result"] == plain
    assert debug["trace"][0]["input"] == {"items": list(range(ITEMS))}


@pytest.mark.parametrize(
    "source",
    [
        "1.0 / 0.0",  # answered `null`
        "{'ratio': double('NaN')}",  # {"ratio": null}
        "{1: 'one', '1': 'text'}",  # {"1": "text"}
        "{1: 'one', true: 'yes'}",  # {"1": "yes"}
    ],
)
async def test_an_expression_json_cannot_answer_truly_is_an_error(
    client: AsyncClient, source: str
) -> None:
    response = await _call(client, [set_step("out", {"expr": source})], args={})
    data = assert_error(response, 400, "expression_error")
    assert data["stepId"] == "out", data
