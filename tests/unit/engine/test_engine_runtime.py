"""The runtime: step order, `return`, `returnSteps`, every per-call limit, traces and masking."""

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.errors import ApiforgeError, ConflictError
from apiforge.engine import catalog
from apiforge.engine.base import LimitExceededError, RunContext, RunLimits, StepFailedError
from apiforge.engine.runtime import MASK, Masker, execute, masker_for, trace_json
from apiforge.engine.service import debug_body, trace_of
from apiforge.engine.spec import StepSpec
from apiforge.engine.values import CompiledValue

from ._engine_core import build, connection, context, probe_names, run

__all__ = ["connection"]  # the fixture, used by name


class ProbeSpec(StepSpec):
    """A test-only step that writes `name` into the `probe` table (stands in for data steps)."""

    type: Literal["probe"]
    name: Any

    def compile(self, compiler: Any) -> "ProbeStep":
        return ProbeStep(self.id, self.type, compiler.value(self.name, "name"))


@dataclass(frozen=True, slots=True)
class ProbeStep:
    id: str
    type: str
    name: CompiledValue

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        name = self.name.resolve(ctx)
        try:
            # A nested savepoint per write, as the record store does for unique fields.
            async with ctx.connection.begin_nested():
                await ctx.connection.execute(
                    text("INSERT INTO probe (name) VALUES (:n)"), {"n": name}
                )
        except IntegrityError:
            raise ConflictError(f"{name} exists", reason="duplicate") from None
        return name


class SleepSpec(StepSpec):
    type: Literal["sleep"]
    seconds: float

    def compile(self, compiler: Any) -> "SleepStep":
        return SleepStep(self.id, self.type, self.seconds)


@dataclass(frozen=True, slots=True)
class SleepStep:
    id: str
    type: str
    seconds: float

    def cost(self, prices: Mapping[str, int]) -> int:
        return 0

    async def run(self, ctx: RunContext) -> Any:
        await asyncio.sleep(self.seconds)
        return None


class SecretSpec(StepSpec):
    """Like `jwtSign`: a step whose input and output are credentials (`sensitive`)."""

    type: Literal["secretive"]

    def compile(self, compiler: Any) -> "SecretStep":
        return SecretStep(self.id, self.type)


@dataclass(frozen=True, slots=True)
class SecretStep:
    id: str
    type: str
    sensitive: bool = True

    def cost(self, prices: Mapping[str, int]) -> int:
        return 0

    async def run(self, ctx: RunContext) -> Any:
        return "token-abc"


@pytest.fixture(autouse=True)
def _test_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(catalog.STEP_TYPES, "probe", ProbeSpec)
    monkeypatch.setitem(catalog.STEP_TYPES, "sleep", SleepSpec)
    monkeypatch.setitem(catalog.STEP_TYPES, "secretive", SecretSpec)


def _set(step_id: str, value: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "value": value}


# --- data, returnSteps, return ---------------------------------------------------------------


async def test_steps_run_in_order_and_read_earlier_outputs(connection: AsyncConnection) -> None:
    compiled = build(
        [_set("a", {"expr": "args.n * 2"}), _set("b", {"total": {"expr": "steps.a + 1"}})],
        params=[{"name": "n", "type": "integer", "required": True}],
    )
    result = await run(compiled, connection, args={"n": 4})
    assert result.data == {"a": 8, "b": {"total": 9}}
    assert result.body == b'{"a":8,"b":{"total":9}}'


async def test_return_steps_select_the_outputs(connection: AsyncConnection) -> None:
    branch = {"id": "pick", "type": "if", "condition": False, "then": [_set("yes", 1)], "else": []}
    compiled = build(
        [_set("check", True), _set("user", {"name": "ann"}), branch], return_steps=["user", "yes"]
    )
    result = await run(compiled, connection)
    # A step whose branch did not run answers null: the shape stays the same.
    assert result.data == {"user": {"name": "ann"}, "yes": None}


async def test_return_ends_the_run_with_its_value(connection: AsyncConnection) -> None:
    compiled = build(
        [
            _set("a", 1),
            {"id": "done", "type": "return", "value": {"expr": "[steps.a, 'x']"}},
            {"id": "never", "type": "probe", "name": "never"},
        ]
    )
    result = await run(compiled, connection)
    assert result.data == [1, "x"]
    assert await probe_names(connection) == []


async def test_return_inside_a_loop_ends_the_whole_run(connection: AsyncConnection) -> None:
    loop = {
        "id": "loop",
        "type": "forEach",
        "items": [1, 2, 3],
        "maxIterations": 3,
        "steps": [
            {"id": "w", "type": "probe", "name": {"expr": "string(item)"}},
            {
                "id": "stop",
                "type": "if",
                "condition": {"expr": "item == 2"},
                "then": [{"id": "r", "type": "return", "value": {"expr": "item"}}],
            },
        ],
    }
    result = await run(build([loop]), connection)
    assert result.data == 2
    assert await probe_names(connection) == ["1", "2"]


# --- control steps ----------------------------------------------------------------------------


async def test_assert_passes_or_stops_with_its_own_error(connection: AsyncConnection) -> None:
    compiled = build(
        [
            {
                "id": "check",
                "type": "assert",
                "condition": {"expr": "args.size <= 50"},
                "status": 422,
                "error": "page_too_large",
                "message": {"expr": "'max 50, got ' + string(args.size)"},
            }
        ],
        params=[{"name": "size", "type": "integer", "required": True}],
    )
    assert (await run(compiled, connection, args={"size": 5})).data == {"check": True}
    with pytest.raises(ApiforgeError) as caught:
        await run(compiled, connection, args={"size": 90})
    assert (caught.value.status, caught.value.reason) == (422, "page_too_large")
    assert caught.value.message == "max 50, got 90"
    assert caught.value.details == {"stepId": "check"}


async def test_conditions_must_be_booleans(connection: AsyncConnection) -> None:
    compiled = build([{"id": "check", "type": "assert", "condition": {"expr": "'yes'"}}])
    with pytest.raises(StepFailedError) as caught:
        await run(compiled, connection)
    assert caught.value.details["stepId"] == "check"


async def test_if_runs_one_branch(connection: AsyncConnection) -> None:
    compiled = build(
        [
            {
                "id": "pick",
                "type": "if",
                "condition": {"expr": "args.flag"},
                "then": [{"id": "t", "type": "probe", "name": "then"}],
                "else": [{"id": "e", "type": "probe", "name": "else"}],
            },
        ],
        params=[{"name": "flag", "type": "boolean", "required": True}],
    )
    assert (await run(compiled, connection, args={"flag": True})).data == {
        "pick": True,
        "t": "then",
    }
    assert (await run(compiled, connection, args={"flag": False})).data == {
        "pick": False,
        "e": "else",
    }
    assert await probe_names(connection) == ["else", "then"]


async def test_foreach_collects_per_item(connection: AsyncConnection) -> None:
    compiled = build(
        [
            {"id": "plain", "type": "forEach", "items": {"expr": "args.xs"}, "maxIterations": 5},
            {
                "id": "body",
                "type": "forEach",
                "items": {"expr": "args.xs"},
                "maxIterations": 5,
                "as": "x",
                "indexAs": "i",
                "steps": [_set("sq", {"expr": "x * x + i"})],
            },
            {
                "id": "picked",
                "type": "forEach",
                "items": {"expr": "args.xs"},
                "maxIterations": 5,
                "steps": [_set("d", {"expr": "item * 2"})],
                "collect": {"expr": "steps.d"},
            },
        ],
        params=[{"name": "xs", "type": "array", "required": True}],
    )
    data = (await run(compiled, connection, args={"xs": [1, 2, 3]})).data
    assert data["plain"] == [1, 2, 3]
    assert data["body"] == [{"sq": 1}, {"sq": 5}, {"sq": 11}]
    assert data["picked"] == [2, 4, 6]
    assert "sq" not in data
    assert "d" not in data


async def test_foreach_iterations_never_see_nested_outputs_of_earlier_ones(
    connection: AsyncConnection,
) -> None:
    # Steps nested deeper in the body (here in an `if`) were left over from the previous
    # iteration, and leaked into `data` after the loop.
    compiled = build(
        [
            {
                "id": "loop",
                "type": "forEach",
                "items": {"expr": "args.xs"},
                "maxIterations": 5,
                "steps": [
                    {
                        "id": "cond",
                        "type": "if",
                        "condition": {"expr": "item == 1"},
                        "then": [
                            {
                                "id": "tx",
                                "type": "transaction",
                                "steps": [_set("x", {"expr": "item"})],
                            }
                        ],
                    }
                ],
                "collect": {"expr": "has(steps.x) ? steps.x : null"},
            },
        ],
        params=[{"name": "xs", "type": "array", "required": True}],
    )
    data = (await run(compiled, connection, args={"xs": [1, 2, 3]})).data
    assert data == {"loop": [1, None, None]}


async def test_foreach_refuses_more_items_than_max_iterations(
    connection: AsyncConnection,
) -> None:
    compiled = build(
        [{"id": "loop", "type": "forEach", "items": {"expr": "args.xs"}, "maxIterations": 2}],
        params=[{"name": "xs", "type": "array"}],
    )
    with pytest.raises(LimitExceededError) as caught:
        await run(compiled, connection, args={"xs": [1, 2, 3]})
    assert caught.value.status == 422
    assert caught.value.details == {"limit": "maxIterations", "max": 2, "stepId": "loop"}


async def test_foreach_items_must_be_a_list(connection: AsyncConnection) -> None:
    compiled = build(
        [{"id": "loop", "type": "forEach", "items": {"expr": "5"}, "maxIterations": 2}]
    )
    with pytest.raises(StepFailedError):
        await run(compiled, connection)


async def test_throw_fails_with_the_apis_error(connection: AsyncConnection) -> None:
    compiled = build(
        [
            {"id": "w", "type": "probe", "name": "written"},
            {
                "id": "missing",
                "type": "throw",
                "status": 404,
                "error": "post_not_found",
                "message": {"expr": "'no post ' + args.id"},
            },
        ],
        params=[{"name": "id"}],
    )
    with pytest.raises(ApiforgeError) as caught:
        await run(compiled, connection, args={"id": "p1"})
    assert (caught.value.status, caught.value.reason) == (404, "post_not_found")
    assert caught.value.message == "no post p1"


async def test_transaction_commits_its_children_together(connection: AsyncConnection) -> None:
    compiled = build(
        [
            {
                "id": "tx",
                "type": "transaction",
                "steps": [
                    {"id": "one", "type": "probe", "name": "one"},
                    {"id": "two", "type": "probe", "name": "two"},
                ],
            },
        ]
    )
    assert (await run(compiled, connection)).data == {
        "tx": {"committed": True},
        "one": "one",
        "two": "two",
    }
    assert await probe_names(connection) == ["one", "two"]


async def test_a_failing_child_rolls_the_group_back(connection: AsyncConnection) -> None:
    compiled = build(
        [
            {"id": "before", "type": "probe", "name": "before"},
            {
                "id": "tx",
                "type": "transaction",
                "onError": "continue",
                "steps": [
                    {"id": "one", "type": "probe", "name": "one"},
                    {"id": "boom", "type": "throw", "error": "nope", "message": "refused"},
                ],
            },
            {"id": "after", "type": "probe", "name": "after"},
        ]
    )
    data = (await run(compiled, connection)).data
    assert data["tx"] == {
        "committed": False,
        "error": {"error": "nope", "message": "refused", "stepId": "boom"},
    }
    assert "one" not in data
    assert await probe_names(connection) == ["after", "before"]


async def test_a_rolled_back_group_shows_no_nested_outputs(connection: AsyncConnection) -> None:
    # Only the group's direct children were forgotten: a write inside an `if` stayed in `data`
    # although it was rolled back.
    compiled = build(
        [
            {
                "id": "tx",
                "type": "transaction",
                "onError": "continue",
                "steps": [
                    {
                        "id": "cond",
                        "type": "if",
                        "condition": True,
                        "then": [{"id": "ghost", "type": "probe", "name": "ghost"}],
                    },
                    {"id": "boom", "type": "throw"},
                ],
            },
            {"id": "seen", "type": "set", "value": {"expr": "has(steps.ghost)"}},
        ],
    )
    data = (await run(compiled, connection)).data
    assert data["tx"]["committed"] is False
    assert "ghost" not in data
    assert "cond" not in data
    assert data["seen"] is False
    assert await probe_names(connection) == []


async def test_a_database_error_inside_rolls_back_only_the_group(
    connection: AsyncConnection,
) -> None:
    """On PostgreSQL a failed statement aborts the transaction; the savepoint makes the rest of
    the call usable again."""
    compiled = build(
        [
            {"id": "before", "type": "probe", "name": "taken"},
            {
                "id": "tx",
                "type": "transaction",
                "onError": "continue",
                "steps": [
                    {"id": "fresh", "type": "probe", "name": "fresh"},
                    {"id": "dup", "type": "probe", "name": "taken"},
                ],
            },
            {"id": "after", "type": "probe", "name": "after"},
        ]
    )
    data = (await run(compiled, connection)).data
    assert data["tx"]["committed"] is False
    assert data["tx"]["error"]["error"] == "duplicate"
    assert await probe_names(connection) == ["after", "taken"]


async def test_a_failing_transaction_fails_the_call_by_default(
    connection: AsyncConnection,
) -> None:
    compiled = build(
        [
            {
                "id": "tx",
                "type": "transaction",
                "steps": [
                    {"id": "one", "type": "probe", "name": "one"},
                    {"id": "boom", "type": "throw"},
                ],
            },
        ]
    )
    with pytest.raises(ApiforgeError):
        await run(compiled, connection)
    assert await probe_names(connection) == []


async def test_return_inside_a_transaction_commits_it(connection: AsyncConnection) -> None:
    compiled = build(
        [
            {
                "id": "tx",
                "type": "transaction",
                "steps": [
                    {"id": "one", "type": "probe", "name": "one"},
                    {"id": "r", "type": "return", "value": "early"},
                ],
            },
        ]
    )
    assert (await run(compiled, connection)).data == "early"
    assert await probe_names(connection) == ["one"]


async def test_log_writes_a_masked_line(connection: AsyncConnection) -> None:
    from structlog.testing import capture_logs

    compiled = build(
        [
            {
                "id": "note",
                "type": "log",
                "level": "warning",
                "message": {"expr": "'login ' + args.user + ' with ' + args.password"},
            }
        ],
        params=[{"name": "user"}, {"name": "password", "sensitive": True}],
    )
    with capture_logs() as logs:
        data = (await run(compiled, connection, args={"user": "ann", "password": "hunter22"})).data
    assert data == {"note": None}
    (line,) = [entry for entry in logs if entry["event"] == "api_log"]
    assert line["log_level"] == "warning"
    assert line["text"] == "login ann with ***"
    assert line["step_id"] == "note"


async def test_log_masks_a_secret_across_its_cut(connection: AsyncConnection) -> None:
    from structlog.testing import capture_logs

    compiled = build(
        [
            {
                "id": "note",
                "type": "log",
                "level": "warning",
                "message": {"expr": "args.pad + args.password"},
            }
        ],
        params=[{"name": "pad"}, {"name": "password", "sensitive": True}],
    )
    secret = "s3cret-value-0123456789"
    with capture_logs() as logs:
        await run(compiled, connection, args={"pad": "x" * 3990, "password": secret})
    (line,) = [entry for entry in logs if entry["event"] == "api_log"]
    assert line["text"] == "x" * 3990 + "***"
    assert secret[:8] not in line["text"]


# --- limits -----------------------------------------------------------------------------------


async def test_step_budget(connection: AsyncConnection) -> None:
    compiled = build([_set(f"s{i}", i) for i in range(4)])
    await run(compiled, connection, limits=RunLimits(max_steps=4))
    with pytest.raises(LimitExceededError) as caught:
        await run(compiled, connection, limits=RunLimits(max_steps=3))
    assert caught.value.details == {"limit": "steps", "max": 3, "stepId": "s3"}


async def test_loop_bodies_count_against_the_step_budget(connection: AsyncConnection) -> None:
    loop = {
        "id": "loop",
        "type": "forEach",
        "items": {"expr": "[1, 2, 3, 4, 5]"},
        "maxIterations": 5,
        "steps": [_set("a", 1), _set("b", 2)],
    }
    with pytest.raises(LimitExceededError) as caught:
        await run(build([loop]), connection, limits=RunLimits(max_steps=8))
    assert caught.value.details["limit"] == "steps"


async def test_iteration_budget_counts_all_loops_together(connection: AsyncConnection) -> None:
    loops = [
        {"id": f"loop{i}", "type": "forEach", "items": {"expr": "[1, 2, 3]"}, "maxIterations": 3}
        for i in range(2)
    ]
    await run(build(loops), connection, limits=RunLimits(max_iterations=6))
    with pytest.raises(LimitExceededError) as caught:
        await run(build(loops), connection, limits=RunLimits(max_iterations=5))
    assert caught.value.details == {"limit": "iterations", "max": 5, "stepId": "loop1"}


async def test_time_budget_stops_a_slow_loop_that_never_awaits(
    connection: AsyncConnection,
) -> None:
    loop = {
        "id": "loop",
        "type": "forEach",
        "items": {"expr": "args.big"},
        "maxIterations": 10_000,
        "steps": [_set("slow", {"expr": "args.big.filter(x, x % 7 == 0).size()"})],
    }
    compiled = build([loop], params=[{"name": "big", "type": "array"}])
    limits = RunLimits(max_steps=100_000, max_iterations=10_000, time_budget_seconds=0.2)
    started = asyncio.get_running_loop().time()
    with pytest.raises(LimitExceededError) as caught:
        await run(compiled, connection, args={"big": list(range(1000))}, limits=limits)
    assert caught.value.details["limit"] == "time"
    assert asyncio.get_running_loop().time() - started < 2


async def test_time_budget_stops_a_step_that_waits(connection: AsyncConnection) -> None:
    compiled = build([{"id": "nap", "type": "sleep", "seconds": 30}])
    started = asyncio.get_running_loop().time()
    with pytest.raises(LimitExceededError) as caught:
        await run(compiled, connection, limits=RunLimits(time_budget_seconds=0.1))
    assert caught.value.details == {"limit": "time", "max": 0.1}
    assert asyncio.get_running_loop().time() - started < 2


async def test_response_size_limit(connection: AsyncConnection) -> None:
    compiled = build([_set("big", {"expr": "args.s + args.s"})], params=[{"name": "s"}])
    limits = RunLimits(max_response_bytes=100)
    await run(compiled, connection, args={"s": "x" * 40}, limits=limits)
    with pytest.raises(LimitExceededError) as caught:
        await run(compiled, connection, args={"s": "x" * 60}, limits=limits)
    assert caught.value.details == {"limit": "responseBytes", "max": 100}


async def test_runtime_expression_errors_name_the_step(connection: AsyncConnection) -> None:
    compiled = build([_set("a", {"x": {"expr": "args.missing.deeper"}})])
    with pytest.raises(StepFailedError) as caught:
        await run(compiled, connection)
    assert caught.value.status == 400
    assert caught.value.reason == "expression_error"
    assert caught.value.details["stepId"] == "a"
    assert caught.value.details["field"] == "value.x"


# --- debug trace ------------------------------------------------------------------------------


async def test_trace_records_each_step_in_order(connection: AsyncConnection) -> None:
    compiled = build(
        [
            _set("a", {"expr": "args.n + 1"}),
            {
                "id": "pick",
                "type": "if",
                "condition": {"expr": "steps.a > 1"},
                "then": [_set("inner", "deep")],
            },
        ],
        params=[{"name": "n", "type": "integer"}],
    )
    ctx = context(connection, args={"n": 1}, debug=True)
    from apiforge.engine.runtime import execute

    result = await execute(compiled, ctx)
    rows = trace_json(result.trace or [], masker_for(compiled, ctx))
    assert [(row["stepId"], row["type"]) for row in rows] == [
        ("a", "set"),
        ("pick", "if"),
        ("inner", "set"),
    ]
    assert rows[1]["input"] == {"condition": True}
    assert rows[1]["output"] is True
    assert rows[0]["output"] == 2
    assert all(isinstance(row["ms"], float) and row["error"] is None for row in rows)


async def test_trace_masks_sensitive_values(connection: AsyncConnection) -> None:
    compiled = build(
        [
            _set(
                "echo",
                {
                    "expr": "{'password': args.password, 'note': 'pw is ' + args.password,"
                    " 'key': env.secrets.apiKey, 'user': args.user}"
                },
            ),
            {"id": "tok", "type": "secretive"},
            {
                "id": "check",
                "type": "assert",
                "condition": {"expr": "args.password == 'x'"},
                "message": {"expr": "'bad ' + args.password"},
            },
        ],
        params=[{"name": "user"}, {"name": "password", "sensitive": True}],
    )
    env = {"config": {}, "secrets": {"apiKey": "sk-live-123456"}}
    ctx = context(connection, args={"user": "ann", "password": "hunter22"}, env=env, debug=True)
    from apiforge.engine.runtime import execute

    with pytest.raises(ApiforgeError):
        await execute(compiled, ctx)
    rows = trace_json(ctx.trace or [], masker_for(compiled, ctx))
    assert rows[0]["output"] == {"password": MASK, "note": "pw is ***", "key": MASK, "user": "ann"}
    assert rows[1]["output"] == MASK
    assert rows[2]["error"] == "bad ***"
    assert "hunter22" not in repr(rows)
    assert "sk-live-123456" not in repr(rows)


async def test_a_debug_trace_is_cut_to_the_response_size_limit(
    connection: AsyncConnection,
) -> None:
    # The trace had no limit: a loop repeating a big output answered megabytes (1 GB possible).
    compiled = build(
        [
            _set("big", {"expr": "args.s"}),
            {
                "id": "loop",
                "type": "forEach",
                "items": {"expr": "args.xs"},
                "maxIterations": 50,
                "steps": [_set("copy", {"expr": "steps.big"})],
                "collect": 1,
            },
            _set("small", 7),
        ],
        params=[{"name": "s"}, {"name": "xs", "type": "array"}],
    )
    limit = 4000
    ctx = context(
        connection,
        args={"s": "x" * 1000, "xs": list(range(30))},
        limits=RunLimits(max_response_bytes=limit),
        debug=True,
    )
    result = await execute(compiled, ctx)
    rows = trace_of(compiled, ctx)
    assert len(orjson.dumps(rows)) <= limit
    assert rows[0]["output"] == "x" * 1000  # rows that fit are whole, in order
    cut = [row for row in rows if "omittedBytes" in row]
    assert cut
    assert all(row["input"] is None and row["output"] is None for row in cut)
    assert all(row["omittedBytes"] > 1000 and row["stepId"] for row in cut)
    assert rows[-1]["omittedEntries"] == len(result.trace or []) - (len(rows) - 1)
    assert len(debug_body(result, rows)) <= limit + len(result.body) + 30
    # Under the limit nothing changes.
    roomy = context(connection, args={"s": "x", "xs": [1]}, debug=True)
    await execute(compiled, roomy)
    assert trace_of(compiled, roomy) == trace_json(roomy.trace or [], masker_for(compiled, roomy))


def test_masker_walks_nested_values() -> None:
    mask = Masker(frozenset({"ssn"}), ["abcd1234", "77"])
    assert mask({"a": ["x abcd1234 y", {"ssn": "1"}], "n": 77, "b": True, "s": "77"}) == {
        "a": ["x *** y", {"ssn": MASK}],
        "n": MASK,
        "b": True,
        "s": MASK,
    }
    # Short secrets are masked where they are the whole value only.
    assert mask("1977") == "1977"


async def test_no_trace_unless_asked(connection: AsyncConnection) -> None:
    assert (await run(build([_set("a", 1)]), connection)).trace is None
