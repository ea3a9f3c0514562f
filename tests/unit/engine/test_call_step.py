"""`callApi`: the callee runs pinned, marked `via_call_api`, in the caller's partition and
budgets, and nesting stops at the depth limit."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from apiforge.engine.base import LimitExceededError, RunContext, RunLimits, StepFailedError
from apiforge.engine.compiler import CompiledApi, compile_api
from apiforge.engine.errors import DefinitionError
from apiforge.engine.runtime import run_api

from ._steps_support import compile_step, make_context, make_services


@dataclass
class Apis:
    """An in-process `call_api` service over compiled definitions, recording each call."""

    definitions: Mapping[tuple[str, str], CompiledApi]
    calls: list[RunContext] = field(default_factory=list)

    async def __call__(self, ctx: RunContext, api: str, version: str, args: dict[str, Any]) -> Any:
        self.calls.append(ctx)
        compiled = self.definitions[(api, version)]
        data, _ = await run_api(compiled, ctx)
        return data


def _api(name: str, steps: list[dict[str, Any]]) -> CompiledApi:
    return compile_api({"api": name, "steps": steps}, {}, {})


def _echo(tag: str) -> CompiledApi:
    return _api(
        "echo",
        [{"id": "out", "type": "set", "value": {"expr": f"{{'tag': '{tag}', 'args': args}}"}}],
    )


async def test_callee_runs_at_the_callers_version_by_default_and_is_marked() -> None:
    apis = Apis({("echo", "1.0.0"): _echo("one")})
    step = compile_step(
        {"id": "c", "type": "callApi", "api": "echo", "args": {"n": {"expr": "args.n"}}}
    )
    ctx = make_context(
        services=make_services(call_api=apis),
        version="1.0.0",
        args={"n": 7},
        token={"sub": "u1"},
        partition="ws-caller",
    )
    out = await step.run(ctx)
    assert out == {"out": {"tag": "one", "args": {"n": 7}}}
    (callee,) = apis.calls
    assert callee.via_call_api is True
    assert callee.call_depth == 1
    assert callee.version == "1.0.0"
    assert callee.api == "echo"
    assert callee.partition == "ws-caller"
    assert callee.token == {"sub": "u1"}
    assert callee.args == {"n": 7}
    # The caller itself is untouched: its own outputs, depth and mark stay its own.
    assert ctx.via_call_api is False
    assert ctx.call_depth == 0
    assert ctx.args == {"n": 7}


async def test_pinned_version_is_used() -> None:
    apis = Apis({("echo", "1.0.0"): _echo("one"), ("echo", "2.1.0"): _echo("two")})
    step = compile_step({"id": "c", "type": "callApi", "api": "echo", "version": "2.1.0"})
    out = await step.run(make_context(services=make_services(call_api=apis), version="1.0.0"))
    assert out["out"]["tag"] == "two"
    assert apis.calls[0].version == "2.1.0"


async def test_published_version_cannot_call_dev() -> None:
    apis = Apis({("echo", "dev"): _echo("dev")})
    step = compile_step({"id": "c", "type": "callApi", "api": "echo", "version": "dev"})
    with pytest.raises(StepFailedError) as caught:
        await step.run(make_context(services=make_services(call_api=apis), version="1.0.0"))
    assert caught.value.details == {"stepId": "c", "field": "version"}
    assert apis.calls == []
    # From dev it is allowed.
    assert await step.run(make_context(services=make_services(call_api=apis), version="dev"))


async def test_recursion_stops_at_the_depth_limit() -> None:
    definitions: dict[tuple[str, str], CompiledApi] = {}
    apis = Apis(definitions)
    definitions[("loop", "dev")] = _api("loop", [{"id": "again", "type": "callApi", "api": "loop"}])
    ctx = make_context(services=make_services(call_api=apis), limits=RunLimits(max_call_depth=3))
    with pytest.raises(LimitExceededError) as caught:
        await run_api(definitions[("loop", "dev")], ctx)
    assert caught.value.status == 422
    assert caught.value.details == {"limit": "callDepth", "max": 3, "stepId": "again"}
    assert [callee.call_depth for callee in apis.calls] == [1, 2, 3]


async def test_callee_steps_count_against_the_callers_budget() -> None:
    many = [{"id": f"s{i}", "type": "set", "value": i} for i in range(4)]
    apis = Apis({("busy", "dev"): _api("busy", many)})
    caller = _api(
        "caller",
        [
            {"id": "first", "type": "callApi", "api": "busy"},
            {"id": "second", "type": "callApi", "api": "busy"},
        ],
    )
    ctx = make_context(services=make_services(call_api=apis), limits=RunLimits(max_steps=8))
    with pytest.raises(LimitExceededError) as caught:
        await run_api(caller, ctx)
    assert caught.value.details["limit"] == "steps"
    ok = make_context(services=make_services(call_api=apis), limits=RunLimits(max_steps=10))
    await run_api(caller, ok)
    assert ok.steps_run == 10


async def test_args_must_evaluate_to_an_object() -> None:
    apis = Apis({("echo", "dev"): _echo("x")})
    step = compile_step({"id": "c", "type": "callApi", "api": "echo", "args": {"expr": "args.v"}})
    ctx = make_context(services=make_services(call_api=apis), args={"v": [1, 2]})
    with pytest.raises(StepFailedError) as caught:
        await step.run(ctx)
    assert caught.value.details == {"stepId": "c", "field": "args"}
    assert apis.calls == []


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({}, "api"),
        ({"api": "get-post"}, "api"),
        ({"api": "x" * 65}, "api"),
        ({"api": "echo", "version": "latest"}, "version"),
        ({"api": "echo", "version": "1.0"}, "version"),
        ({"api": "echo", "version": "01.0.0"}, "version"),
        ({"api": "echo", "args": [1]}, "args"),
        ({"api": "echo", "args": {"x": {"expr": "steps.later"}}}, "args"),
        ({"api": {"expr": "args.name"}}, "api"),
    ],
)
def test_bad_definitions_are_refused(config: dict[str, Any], field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_step({"id": "c", "type": "callApi", **config})
    assert caught.value.field == f"steps.c.{field}"


def test_cost_is_the_step_type_price() -> None:
    step = compile_step({"id": "c", "type": "callApi", "api": "echo"})
    assert step.cost({"callApi": 4}) == 4
