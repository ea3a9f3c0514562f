"""Review: expressions never await, so a call made of them must still stop at its deadline, let
other requests on the worker run, and keep what its expressions produce within a bound."""

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.engine.base import LimitExceededError, RunLimits

from ._engine_core import build, connection, run

__all__ = ["connection"]

# About 0.1 s of engine time each (`map` copies: quadratic in the list's length).
SLOW = "args.l.map(x, x + 1).size()"
SLOW_PARAMS = [{"name": "l", "type": "array"}]
SLOW_ARGS = {"l": list(range(1000))}


async def test_a_value_of_many_slow_expressions_stops_at_the_deadline(
    connection: AsyncConnection,
) -> None:
    value = {f"k{i}": {"expr": SLOW} for i in range(60)}  # about 6 s if it all ran
    compiled = build([{"id": "many", "type": "set", "value": value}], params=SLOW_PARAMS)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(LimitExceededError) as caught:
        await run(compiled, connection, args=SLOW_ARGS, limits=RunLimits(time_budget_seconds=0.3))
    assert caught.value.details == {"limit": "time", "max": 0.3, "stepId": "many"}
    assert loop.time() - started < 1.5


async def test_a_loop_of_expressions_lets_other_tasks_run(connection: AsyncConnection) -> None:
    step = {
        "id": "each",
        "type": "forEach",
        "items": {"expr": "args.ids"},
        "maxIterations": 100,
        "collect": {"expr": SLOW},
    }
    params = [*SLOW_PARAMS, {"name": "ids", "type": "array"}]
    compiled = build([step], params=params)
    args: dict[str, Any] = {**SLOW_ARGS, "ids": list(range(100))}  # about 10 s if it all ran
    limits = RunLimits(time_budget_seconds=3)
    loop = asyncio.get_running_loop()
    call = asyncio.create_task(run(compiled, connection, args=args, limits=limits))
    started = loop.time()
    await asyncio.sleep(0.2)  # another request's await on the same worker
    waited = loop.time() - started
    with pytest.raises(LimitExceededError) as caught:
        await call
    assert caught.value.details["limit"] == "time"
    assert waited < 1.0


async def test_what_a_call_s_expressions_produce_is_capped(connection: AsyncConnection) -> None:
    step = {
        "id": "each",
        "type": "forEach",
        "items": {"expr": "args.ids"},
        "maxIterations": 100,
        "collect": {"expr": "args.s"},
    }
    params = [{"name": "s"}, {"name": "ids", "type": "array"}]
    compiled = build([step], params=params, return_steps=[])
    size = 900_000
    maximum = RunLimits().max_expression_chars
    ids = list(range(maximum // size + 1))
    with pytest.raises(LimitExceededError) as caught:
        await run(compiled, connection, args={"s": "a" * size, "ids": ids})
    assert caught.value.details == {
        "limit": "expressionChars",
        "max": maximum,
        "stepId": "each",
    }
    # Within the bound, the same loop runs.
    result = await run(compiled, connection, args={"s": "a" * size, "ids": ids[:10]})
    assert result.data == {}
