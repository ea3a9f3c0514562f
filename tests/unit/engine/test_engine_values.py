"""Config values: JSON literals and `{"expr"}` at any depth, compiled once, resolved per call."""

from typing import Any

import pytest

from apiforge.engine.base import StepFailedError
from apiforge.engine.errors import DefinitionError
from apiforge.engine.values import compile_value, is_expression

VARIABLES: dict[str, Any] = {
    "args": {"n": 2, "name": "ann"},
    "token": {},
    "steps": {"posts": {"list": [{"title": "a"}], "totalCount": 1}},
    "env": {"config": {"site": "blog"}, "secrets": {}},
}


def test_literals_are_returned_as_fresh_copies() -> None:
    value = compile_value({"a": [1, {"b": None}], "c": "text"}, "steps.s.value")
    assert value.is_literal
    assert value.step_refs == frozenset()
    first = value.evaluate(VARIABLES)
    first["a"].append("changed")
    assert value.evaluate(VARIABLES) == {"a": [1, {"b": None}], "c": "text"}


@pytest.mark.parametrize("raw", [None, True, 0, 1.5, "x", [], {}])
def test_scalars_and_empty_containers_are_literals(raw: Any) -> None:
    value = compile_value(raw, "f")
    assert value.is_literal
    assert value.literal == raw


def test_expressions_are_evaluated_at_any_depth() -> None:
    value = compile_value(
        {
            "page": {"expr": "args.n + 1"},
            "items": [{"expr": "steps.posts.list[0].title"}, 3],
            "fixed": {"k": "v"},
        },
        "steps.s.value",
    )
    assert not value.is_literal
    assert value.step_refs == frozenset({"posts"})
    assert value.evaluate(VARIABLES) == {"page": 3, "items": ["a", 3], "fixed": {"k": "v"}}


def test_only_a_lone_expr_key_is_an_expression() -> None:
    assert is_expression({"expr": "1"})
    assert not is_expression({"expr": "1", "other": 2})
    value = compile_value({"expr": "1", "other": 2}, "f")
    assert value.is_literal
    assert value.literal == {"expr": "1", "other": 2}


def test_step_references_are_collected_from_every_expression() -> None:
    value = compile_value(
        [{"expr": "steps.a.x"}, {"deep": {"expr": "steps.b + steps.c"}}], "steps.s.value"
    )
    assert value.step_refs == frozenset({"a", "b", "c"})


def test_literal_of_an_expression_is_an_error() -> None:
    with pytest.raises(TypeError):
        _ = compile_value({"expr": "1"}, "f").literal


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"expr": "1 +"}, "steps.s.value"),
        ({"a": [{"expr": ")"}]}, "steps.s.value.a.0"),
        ({"expr": 12}, "steps.s.value"),
        ({"expr": None}, "steps.s.value"),
    ],
)
def test_bad_expressions_name_their_place(raw: Any, field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_value(raw, "steps.s.value")
    assert caught.value.details["errors"][0]["field"] == field
    assert caught.value.step_id == "s"


def test_paths_outside_steps_are_named_as_given() -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_value({"expr": "("}, "auth.target")
    assert caught.value.field == "auth.target"
    assert caught.value.step_id is None


def test_non_json_values_are_refused() -> None:
    with pytest.raises(DefinitionError):
        compile_value({"a": object()}, "steps.s.value")


def test_a_failing_expression_names_its_step_and_field() -> None:
    value = compile_value({"x": {"expr": "args.missing + 1"}}, "steps.calc.value")
    with pytest.raises(StepFailedError) as caught:
        value.evaluate(VARIABLES)
    assert caught.value.status == 400
    assert caught.value.reason == "expression_error"
    assert caught.value.details == {"stepId": "calc", "field": "value.x"}
    assert caught.value.message.startswith("steps.calc.value.x: ")
