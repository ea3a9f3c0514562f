"""Step validation on save (errors name `steps.<id>.<field>`) and static cost."""

from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import update

from apiforge.builder.models import StepPrice
from apiforge.datasets.schema import CollectionSchema
from apiforge.engine.compiler import (
    MAX_DEPTH,
    MAX_STEPS,
    Compiler,
    compile_api,
    compile_workflow,
)
from apiforge.engine.errors import DefinitionError
from apiforge.engine.loader import load_prices

from ._engine_core import build


def _error(steps: Any, **extra: Any) -> dict[str, str]:
    with pytest.raises(DefinitionError) as caught:
        compile_api({"api": "x", "steps": steps, **extra}, {}, {})
    assert caught.value.status == 400
    assert caught.value.reason == "invalid_definition"
    (error,) = caught.value.details["errors"]
    return dict(error)


def _set(step_id: str, value: Any = 1) -> dict[str, Any]:
    return {"id": step_id, "type": "set", "value": value}


def test_unknown_step_type_names_the_step() -> None:
    error = _error([{"id": "fetch", "type": "teleport"}])
    assert error["field"] == "steps.fetch.type"
    assert "unknown step type" in error["message"]


def test_unknown_fields_are_refused() -> None:
    error = _error([{"id": "a", "type": "set", "value": 1, "colour": "red"}])
    assert error == {"field": "steps.a.colour", "message": "unknown field"}


def test_missing_config_is_refused() -> None:
    assert _error([{"id": "a", "type": "set"}])["field"] == "steps.a.value"


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ("not a step", "steps.0"),
        ({"type": "set", "value": 1}, "steps.0.id"),
        ({"id": "9lives", "type": "set", "value": 1}, "steps.0.id"),
        ({"id": "a" * 65, "type": "set", "value": 1}, "steps.0.id"),
        ({"id": "a b", "type": "set", "value": 1}, "steps.0.id"),
    ],
)
def test_steps_need_an_object_with_a_valid_id(step: Any, field: str) -> None:
    assert _error([step])["field"] == field


def test_steps_must_be_a_list() -> None:
    assert _error({"id": "a"})["field"] == "steps"


def test_duplicate_ids_are_refused_even_when_nested() -> None:
    error = _error(
        [
            _set("a"),
            {"id": "branch", "type": "if", "condition": True, "then": [_set("a")]},
        ]
    )
    assert error["field"] == "steps.a.id"
    assert "duplicate" in error["message"]


def test_bad_expressions_name_the_field() -> None:
    error = _error([_set("a", {"nested": [{"expr": "1 +"}]})])
    assert error["field"] == "steps.a.value.nested.0"


def test_expr_must_be_a_string() -> None:
    assert _error([_set("a", {"expr": 5})])["field"] == "steps.a.value"


def test_reading_a_later_step_is_refused() -> None:
    error = _error([_set("a", {"expr": "steps.b + 1"}), _set("b")])
    assert error["field"] == "steps.a.value"
    assert "does not run before" in error["message"]


def test_reading_an_unknown_step_is_refused() -> None:
    error = _error([_set("a", {"expr": "steps.ghost"})])
    assert error == {"field": "steps.a.value", "message": "unknown step 'ghost'"}


def test_a_step_cannot_read_itself() -> None:
    assert "own output" in _error([_set("a", {"expr": "steps.a"})])["message"]


def test_reading_earlier_steps_is_fine() -> None:
    compiled = build([_set("a"), _set("b", {"expr": "steps.a + 1"})])
    assert [step.id for step in compiled.steps] == ["a", "b"]


def test_foreach_without_max_iterations_is_refused() -> None:
    error = _error([{"id": "loop", "type": "forEach", "items": [1], "steps": []}])
    assert error["field"] == "steps.loop.maxIterations"


@pytest.mark.parametrize("bad", [0, -1, 10_001, "5", 2.5, {"expr": "5"}])
def test_foreach_max_iterations_must_be_a_literal_bounded_integer(bad: Any) -> None:
    error = _error([{"id": "loop", "type": "forEach", "items": [], "maxIterations": bad}])
    assert error["field"] == "steps.loop.maxIterations"


def test_foreach_names_must_not_shadow_the_roots() -> None:
    step = {"id": "loop", "type": "forEach", "items": [], "maxIterations": 1, "as": "args"}
    assert _error([step])["field"] == "steps.loop.as"


def test_foreach_body_is_readable_inside_and_by_collect_only() -> None:
    loop = {
        "id": "loop",
        "type": "forEach",
        "items": [1, 2],
        "maxIterations": 2,
        "steps": [_set("double", {"expr": "item * 2"}), _set("more", {"expr": "steps.double"})],
        "collect": {"expr": "steps.more + index"},
    }
    build([loop])
    error = _error([loop, _set("after", {"expr": "steps.double"})])
    assert error["field"] == "steps.after.value"


def test_if_branches_cannot_read_each_other_but_later_steps_can() -> None:
    branch = {
        "id": "pick",
        "type": "if",
        "condition": True,
        "then": [_set("yes")],
        "else": [_set("no", {"expr": "steps.yes"})],
    }
    assert _error([branch])["field"] == "steps.no.value"
    branch["else"] = [_set("no")]
    build([branch, _set("after", {"expr": "has(steps.yes) ? steps.yes : steps.no"})])


def test_transaction_children_are_readable_afterwards() -> None:
    tx = {"id": "tx", "type": "transaction", "steps": [_set("inner")]}
    build([tx, _set("after", {"expr": "steps.inner"})], return_steps=["inner"])


@pytest.mark.parametrize(
    ("return_steps", "field"),
    [
        (["ghost"], "returnSteps.0"),
        (["a", "a"], "returnSteps"),
        ("a", "returnSteps"),
        (["body"], "returnSteps.0"),
    ],
)
def test_return_steps_must_name_readable_steps(return_steps: Any, field: str) -> None:
    loop = {
        "id": "loop",
        "type": "forEach",
        "items": [],
        "maxIterations": 1,
        "steps": [_set("body")],
    }
    error = _error([_set("a"), loop], returnSteps=return_steps)
    assert error["field"] == field


def test_nesting_is_capped() -> None:
    step: dict[str, Any] = _set("leaf")
    for level in range(MAX_DEPTH):
        step = {"id": f"t{level}", "type": "transaction", "steps": [step]}
    assert "nest deeper" in _error([step])["message"]


def test_step_count_is_capped() -> None:
    assert "at most" in _error([_set(f"s{i}") for i in range(MAX_STEPS + 1)])["message"]


@pytest.mark.parametrize(
    ("step", "field"),
    [
        ({"id": "a", "type": "assert", "condition": True, "status": 500}, "steps.a.status"),
        ({"id": "a", "type": "assert", "condition": True, "error": "Bad Reason"}, "steps.a.error"),
        ({"id": "a", "type": "throw", "status": 302}, "steps.a.status"),
        ({"id": "a", "type": "throw", "status": "404"}, "steps.a.status"),
        ({"id": "a", "type": "log", "message": "x", "level": "loud"}, "steps.a.level"),
        ({"id": "a", "type": "transaction", "steps": [], "onError": "ignore"}, "steps.a.onError"),
        ({"id": "a", "type": "forEach", "items": "abc", "maxIterations": 1}, "steps.a.items"),
        ({"id": "a", "type": "if", "condition": True, "then": "x"}, "steps.a.then"),
    ],
)
def test_control_step_configs_are_checked(step: dict[str, Any], field: str) -> None:
    assert _error([step])["field"] == field


def test_cost_sums_steps_and_takes_the_dearest_branch_and_loop_bound() -> None:
    prices = {"set": 3, "if": 1, "forEach": 2, "transaction": 5, "assert": 7}
    steps = [
        _set("a"),
        {
            "id": "branch",
            "type": "if",
            "condition": True,
            "then": [_set("t1")],
            "else": [_set("e1"), {"id": "e2", "type": "assert", "condition": True}],
        },
        {
            "id": "loop",
            "type": "forEach",
            "items": [],
            "maxIterations": 10,
            "steps": [_set("b1"), _set("b2")],
        },
        {"id": "tx", "type": "transaction", "steps": [_set("c")]},
    ]
    compiled = compile_api({"api": "x", "steps": steps}, {}, prices)
    # set 3 + if (1 + max(3, 3 + 7)) + forEach (2 + 10 x 6) + transaction (5 + 3)
    assert compiled.cost == 3 + 11 + 62 + 8


def test_unpriced_step_types_cost_nothing() -> None:
    assert compile_api({"api": "x", "steps": [_set("a")]}, {}, {}).cost == 0


async def test_cost_uses_the_step_prices_table(app: FastAPI) -> None:
    async with app.state.engine.begin() as conn:
        await conn.execute(update(StepPrice).where(StepPrice.step_type == "set").values(cost=4))
        await conn.execute(update(StepPrice).where(StepPrice.step_type == "forEach").values(cost=1))
        prices = await load_prices(conn)
    assert prices["set"] == 4
    assert prices["getMany"] == 1  # seeded defaults are there too
    loop = {"id": "loop", "type": "forEach", "items": [], "maxIterations": 5, "steps": [_set("b")]}
    assert compile_api({"api": "x", "steps": [_set("a"), loop]}, {}, prices).cost == 4 + 1 + 20


def test_workflows_take_any_args() -> None:
    compiled = compile_workflow([_set("a", {"expr": "args.x"})], {}, {})
    assert compiled.validate_args({"x": 1, "y": [2]}) == {"x": 1, "y": [2]}


def test_definitions_keep_api_metadata() -> None:
    compiled = compile_api(
        {
            "api": "getPost",
            "steps": [],
            "price": 7,
            "enabled": False,
            "auth": {"requireToken": True},
            "params": [{"name": "id", "required": True}],
        },
        {},
        {},
    )
    assert (compiled.api, compiled.price, compiled.enabled) == ("getPost", 7, False)
    assert compiled.auth == {"requireToken": True}
    assert compiled.params_schema["required"] == ["id"]
    assert compiled.return_steps is None


def test_expressions_may_only_read_the_known_names() -> None:
    error = _error([_set("a", {"expr": "secrets.key"})])
    assert error["field"] == "steps.a.value"
    assert "unknown name secrets" in error["message"]
    build([_set("b", {"expr": "args.x == token.sub && env.config.y == now"})])


def test_loop_names_are_readable_only_inside_the_loop() -> None:
    loop = {
        "id": "loop",
        "type": "forEach",
        "items": [1],
        "maxIterations": 1,
        "as": "post",
        "steps": [_set("inside", {"expr": "post + index"})],
    }
    build([loop])
    error = _error([loop, _set("after", {"expr": "post"})])
    assert error["field"] == "steps.after.value"


def test_macro_variables_are_not_unknown_names() -> None:
    build([_set("a", {"expr": "args.xs.map(x, x * 2).filter(y, y > 2)"})])


def test_dynamic_step_reads_are_refused() -> None:
    for source in ("steps[args.name]", "steps.size()", "steps.exists(k, k == 'a')"):
        error = _error([_set("a", 1), _set("b", {"expr": source})])
        assert error["field"] == "steps.b.value", source
        assert "by id" in error["message"]
    build([_set("a", 1), _set("b", {"expr": "steps['a'] + 1"})])


@pytest.mark.parametrize(
    "source",
    [
        "1 + " * 30_000 + "1",  # 120 KB
        "(" * 5000 + "1" + ")" * 5000,
        "[1].map(a, [2].map(b, [3].map(c, [4].map(d, d))))",
        "[" * 200 + "]" * 200,
    ],
)
def test_malicious_expressions_are_refused_in_milliseconds(source: str) -> None:
    import time

    started = time.perf_counter()
    error = _error([_set("a", {"expr": source})])
    assert time.perf_counter() - started < 0.05
    assert error["field"] == "steps.a.value"


POSTS = CollectionSchema.build(
    id="c1",
    app_id="a1",
    name="posts",
    fields=[
        {"name": "title", "type": "string"},
        {"name": "published", "type": "boolean"},
        {"name": "ssn", "type": "string", "encrypted": True},
    ],
)


def _filter(tree: Any) -> Any:
    compiler = Compiler(collections={"posts": POSTS})
    compiler.available.add("earlier")
    compiler.current = "query"
    compiled = compiler.filter(tree, compiler.collection("posts"))
    compiler.raise_pending()
    return compiled


def test_filters_are_checked_against_the_collection() -> None:
    compiled = _filter(
        {
            "_and": [
                {"published": {"_eq": True}},
                {"title": {"_contains": {"expr": "steps.earlier"}}},
                {"createdTime": {"_gte": "2024-01-01T00:00:00Z"}},
            ]
        }
    )
    assert compiled.step_refs == frozenset({"earlier"})
    tree = compiled.evaluate({"steps": {"earlier": "x"}})
    assert tree["_and"][1] == {"title": {"_contains": "x"}}


@pytest.mark.parametrize(
    ("tree", "field"),
    [
        ({"colour": {"_eq": 1}}, "steps.query.filter.colour"),
        ({"ssn": {"_eq": "1"}}, "steps.query.filter.ssn"),
        ({"_and": [{"title": {"_like": "x"}}]}, "steps.query.filter._and.0.title._like"),
        ({"title": {"_eq": {"expr": "steps.later"}}}, "steps.query.filter"),
        ({"title": {"_eq": {"expr": "1 +"}}}, "steps.query.filter.title._eq"),
    ],
)
def test_bad_filters_name_the_node(tree: Any, field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        _filter(tree)
    assert caught.value.details["errors"][0]["field"] == field


def test_unknown_collections_are_refused() -> None:
    compiler = Compiler(collections={"posts": POSTS})
    compiler.current = "q"
    with pytest.raises(DefinitionError) as caught:
        compiler.collection("comments")
    assert caught.value.field == "steps.q.collection"


def test_encrypted_fields_of_used_collections_are_masked_in_traces() -> None:
    compiler = Compiler(collections={"posts": POSTS})
    compiler.current = "q"
    compiler.collection("posts")
    assert compiler.masked_keys == {"ssn"}
