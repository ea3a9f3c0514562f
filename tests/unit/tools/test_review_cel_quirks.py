"""Review: where an expression's result is something JSON cannot carry, the expression fails
clearly instead of answering a silently changed value."""

from typing import Any

import pytest

from apiforge.tools.expressions import ExpressionError, compile_expression

VARIABLES: dict[str, Any] = {"args": {"n": 3, "f": 2.5, "l": [1, 2], "k": 1, "s": "1"}}


def _eval(source: str) -> Any:
    return compile_expression(source).evaluate(VARIABLES)


@pytest.mark.parametrize(
    "source",
    [
        "{1: 'a', true: 'b', '1': 'c'}",
        "{1: 'a', '1': 'c'}",
        "{true: 'b', 'true': 'c'}",
        "{1: 'a', true: 'b'}",
        "{0: 'a', false: 'b'}",
        "{1: 'a', 1u: 'b'}",
        "{'x': [{1: 'a', true: 'b'}]}",
        "{args.k: 'a', args.s: 'b'}",
    ],
)
def test_distinct_keys_that_would_be_one_json_key_are_refused(source: str) -> None:
    with pytest.raises(ExpressionError, match="give its keys as strings"):
        _eval(source)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{1: 'a', 2: 'b'}", {"1": "a", "2": "b"}),
        ("{true: 'a', 'x': 'b'}", {"true": "a", "x": "b"}),
        ("{1: 'a', true: 'b'}[true]", "b"),  # no JSON object is made: nothing is lost
    ],
)
def test_keys_that_stay_distinct_are_kept(source: str, expected: Any) -> None:
    assert _eval(source) == expected


@pytest.mark.parametrize(
    "source", ["1.0 / 0.0", "-1.0 / 0.0", "double('NaN')", "[1, {'x': double('inf')}]"]
)
def test_nan_and_infinities_in_a_result_are_refused(source: str) -> None:
    with pytest.raises(ExpressionError, match="finite numbers only"):
        _eval(source)


def test_nan_inside_an_expression_is_still_a_value() -> None:
    assert _eval("double('NaN') != double('NaN')") is True
    assert _eval("1.0 / 0.0 > 1e308") is True
