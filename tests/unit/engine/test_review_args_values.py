"""Review of args → engine values, unit level: `number` args become floats (CEL doubles) and
`integer` ones ints, an undeclared `null` arg is refused, a workflow's args pass through as
given, and reading a keyword-named field with a dot is refused with a message saying how."""

from typing import Any

import pytest

from apiforge.engine.compiler import compile_api
from apiforge.engine.errors import ArgumentsError, MissingArgumentsError
from apiforge.engine.params import compile_params, open_params
from apiforge.engine.runtime import Masker, sensitive_values
from apiforge.gateway.stages.permissions import target_of
from apiforge.tools.expressions import ExpressionError, compile_expression

PARAMS = compile_params(
    [
        {"name": "x", "type": "number"},
        {"name": "n", "type": "integer"},
        {"name": "d", "type": "number", "default": 2},
    ]
)


def _errors(exc: ArgumentsError) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = exc.details["errors"]
    return errors


@pytest.mark.parametrize(("sent", "n"), [(1, 3), (1.0, 3.0)])
def test_numbers_become_floats_and_integers_ints(sent: Any, n: Any) -> None:
    checked = PARAMS.validate({"x": sent, "n": n})
    assert checked == {"x": 1.0, "n": 3, "d": 2.0}
    assert [type(checked[name]) for name in ("x", "n", "d")] == [float, int, float]
    half = compile_expression("[args.x / 2.0, args.n / 2, args.d + 0.5]")
    assert half.evaluate({"args": checked}) == [0.5, 1, 2.5]


def test_a_number_beyond_the_double_range_is_refused_by_name() -> None:
    with pytest.raises(ArgumentsError) as caught:
        PARAMS.validate({"x": 10**400})
    assert _errors(caught.value) == [{"field": "x", "message": "must be a finite number"}]


def test_an_undeclared_null_arg_is_refused_after_missing_ones() -> None:
    with pytest.raises(ArgumentsError) as caught:
        PARAMS.validate({"x": None, "zz": 1, "y": None})
    assert _errors(caught.value) == [{"field": "y", "message": "unknown parameter"}]
    required = compile_params([{"name": "a", "required": True}])
    with pytest.raises(MissingArgumentsError):
        required.validate({"a": None, "b": None})
    assert PARAMS.validate({"x": None}) == {"d": 2.0}


def test_workflow_args_pass_through_as_given() -> None:
    args = {"x": None, "n": 1, "s": "a"}
    checked = open_params().validate(args)
    assert checked == args
    assert checked is not args


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("args.in", "args['in']"),
        ("has(args.null)", "'null' in args"),
        ("steps.user.true == 1", "steps.user['true']"),
        ("[1].false", "x['false']"),
    ],
)
def test_a_keyword_read_with_a_dot_says_how_to_read_it(source: str, hint: str) -> None:
    with pytest.raises(ExpressionError, match="is a CEL keyword") as caught:
        compile_expression(source)
    assert hint in str(caught.value)


def test_other_syntax_errors_keep_the_engines_diagnosis() -> None:
    with pytest.raises(ExpressionError, match="Syntax error"):
        compile_expression("args.x + ")


@pytest.mark.parametrize(("value", "target"), [(7, "7"), (7.0, "7"), ("7", "7")])
def test_a_whole_number_arg_is_a_user_rights_target(value: Any, target: str) -> None:
    spec = {"source": "arg", "value": "org"}
    assert target_of(spec, {"org": value}, {}) == target


def test_a_sensitive_whole_float_is_masked_as_cel_writes_it() -> None:
    params = [{"name": "card", "type": "number", "sensitive": True}]
    compiled = compile_api({"api": "pay", "params": params, "steps": []}, {}, {})
    args = compiled.validate_args({"card": 4242424242})
    written = compile_expression("'card ' + string(args.card)").evaluate({"args": args})
    masker = Masker(frozenset(), sensitive_values(compiled, args, {}))
    assert masker(written) == "card ***"
    assert masker(args["card"]) == "***"
