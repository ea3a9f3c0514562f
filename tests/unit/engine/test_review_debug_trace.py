"""Review: a debug trace shows each step's inputs as the step evaluated them, once: the trace
evaluated them a second time before the step ran, so a debug call spent its `expressionChars`
budget twice (and its time) and could fail where the same call without `debug` passes."""

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.errors import ApiforgeError
from apiforge.engine.base import LimitExceededError, RunLimits
from apiforge.engine.runtime import execute, masker_for, trace_json

from ._engine_core import build, connection, context, run

__all__ = ["connection"]

SIZE = 100_000
# Room for one evaluation of each input below, not two.
LIMITS = RunLimits(max_expression_chars=int(SIZE * 1.5))


def _steps() -> list[Any]:
    return [
        {"id": "check", "type": "assert", "condition": {"expr": "size(args.s) > 0"}},
        {"id": "say", "type": "log", "message": {"expr": "args.s"}},
    ]


async def test_a_debug_call_fits_the_expression_budget_the_plain_call_fits(
    connection: AsyncConnection,
) -> None:
    compiled = build(_steps(), params=[{"name": "s"}], return_steps=[])
    args = {"s": "x" * SIZE}
    assert (await run(compiled, connection, args=args, limits=LIMITS)).data == {}
    result = await run(compiled, connection, args=args, limits=LIMITS, debug=True)
    assert result.data == {}
    rows = trace_json(result.trace or [], masker_for(compiled, context(connection)))
    assert [row["input"] for row in rows] == [{"condition": True}, {"message": "x" * SIZE}]


async def test_a_debug_call_over_the_budget_still_fails_at_the_same_step(
    connection: AsyncConnection,
) -> None:
    compiled = build(_steps(), params=[{"name": "s"}], return_steps=[])
    args = {"s": "x" * (LIMITS.max_expression_chars + 1)}
    for debug in (False, True):
        with pytest.raises(LimitExceededError) as caught:
            await run(compiled, connection, args=args, limits=LIMITS, debug=debug)
        assert caught.value.details["stepId"] == "say"


async def test_a_failing_input_shows_its_error_once(connection: AsyncConnection) -> None:
    compiled = build(
        [{"id": "check", "type": "assert", "condition": {"expr": "args.n / 0 > 1"}}],
        params=[{"name": "n", "type": "integer"}],
    )
    ctx = context(connection, args={"n": 1}, debug=True)
    with pytest.raises(ApiforgeError):
        await execute(compiled, ctx)
    rows = trace_json(ctx.trace or [], masker_for(compiled, ctx))
    assert rows[0]["input"]["condition"].startswith("<error: ")
    assert rows[0]["error"] is not None


async def test_a_traced_loop_reads_each_item_s_values(connection: AsyncConnection) -> None:
    compiled = build(
        [
            {
                "id": "each",
                "type": "forEach",
                "items": {"expr": "args.xs"},
                "maxIterations": 5,
                "steps": [{"id": "say", "type": "log", "message": {"expr": "string(item)"}}],
            }
        ],
        params=[{"name": "xs", "type": "array"}],
    )
    ctx = context(connection, args={"xs": [1, 2]}, debug=True)
    await execute(compiled, ctx)
    rows = trace_json(ctx.trace or [], masker_for(compiled, ctx))
    assert [row["input"] for row in rows] == [
        {"items": [1, 2]},
        {"message": "1"},
        {"message": "2"},
    ]
