"""Review, over HTTP: expressions and `password` steps that would hold a server are refused with
a clear 400 before they run."""

import time
from typing import Any

from httpx import AsyncClient, Response

from tests.e2e._apps import new_app, set_step
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register

FAST = 2.0


async def _run(
    client: AsyncClient, steps: list[dict[str, Any]], args: dict[str, Any]
) -> tuple[Response, float]:

    user = await register(client)
    app_id = await new_app(client, user.headers)
    body = {"appId": app_id, "steps": steps, "args": args}
    started = time.perf_counter()
    response = await client.post("/api/v1/workflows", json=body, headers=user.headers)
    return response, time.perf_counter() - started


async def test_a_doubling_map_chain_is_refused_before_it_runs(client: AsyncClient) -> None:
    chain = "['aaaaaaaaaa']" + ".map(x, x + x)" * 30 + "[0].size()"  # 10 GB if it ran
    response, elapsed = await _run(client, [set_step("big", {"expr": chain})], {})
    data = assert_error(response, 400, "expression_error")
    assert data["stepId"] == "big"
    assert "too much work" in response.json()["message"]
    assert elapsed < FAST


async def test_repeated_concatenation_of_a_large_argument_is_refused(client: AsyncClient) -> None:
    source = "+".join(["args.s"] * 500) + " == ''"  # 85 s of copying if it ran
    response, elapsed = await _run(
        client, [set_step("joined", {"expr": source})], {"s": "a" * 500_000}
    )
    assert_error(response, 400, "expression_error")
    assert elapsed < FAST


async def test_ordinary_expressions_over_a_large_argument_still_run(client: AsyncClient) -> None:
    source = "'<' + args.s + '>' == '<' + args.s + '>'"
    response, _ = await _run(client, [set_step("same", {"expr": source})], {"s": "a" * 500_000})
    assert data_of(response) == {"same": True}


async def test_a_hash_asking_for_a_huge_argon2_cost_is_refused(client: AsyncClient) -> None:
    crafted = "$argon2id$v=19$m=4000000,t=1000,p=1$c2FsdHNhbHRzYWx0$" + "A" * 43
    step = {
        "id": "check",
        "type": "password",
        "action": "verify",
        "password": "secret",
        "hash": {"expr": "args.hash"},
    }
    response, elapsed = await _run(client, [step], {"hash": crafted})
    data = assert_error(response, 400, "step_failed")
    assert data["stepId"] == "check"
    assert data["field"] == "hash"
    assert elapsed < FAST
