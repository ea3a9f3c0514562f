"""Params → JSON Schema: every attribute of DESIGN.md §5, call-time errors, definition errors."""

import time
from typing import Any

import pytest

from apiforge.engine.errors import ArgumentsError, DefinitionError, MissingArgumentsError
from apiforge.engine.params import CompiledParams, check_pattern, compile_params


def _params(*items: dict[str, Any]) -> CompiledParams:
    return compile_params(list(items))


def _field_errors(exc: ArgumentsError | DefinitionError) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = exc.details["errors"]
    return errors


def test_every_attribute_reaches_the_schema() -> None:
    compiled = _params(
        {
            "name": "title",
            "type": "string",
            "required": True,
            "description": "Post title",
            "min": 1,
            "max": 80,
            "pattern": "^[A-Za-z ]+$",
        },
        {"name": "pageSize", "type": "integer", "default": 20, "min": 1, "max": 50},
        {"name": "ratio", "type": "number", "min": 0.5, "max": 2.5},
        {"name": "sort", "type": "string", "enum": ["new", "top"]},
        {"name": "tags", "type": "array", "max": 3},
        {"name": "meta", "type": "object", "min": 1},
        {"name": "draft", "type": "boolean", "default": False},
        {"name": "password", "type": "string", "sensitive": True},
    )
    props = compiled.schema["properties"]
    assert compiled.schema["required"] == ["title"]
    assert compiled.schema["additionalProperties"] is False
    assert props["title"] == {
        "type": "string",
        "description": "Post title",
        "minLength": 1,
        "maxLength": 80,
        "pattern": "^[A-Za-z ]+$",
    }
    assert props["pageSize"] == {"type": "integer", "minimum": 1, "maximum": 50, "default": 20}
    assert props["ratio"] == {"type": "number", "minimum": 0.5, "maximum": 2.5}
    assert props["sort"]["enum"] == ["new", "top"]
    assert props["tags"] == {"type": "array", "maxItems": 3}
    assert props["meta"] == {"type": "object", "minProperties": 1}
    assert props["draft"] == {"type": "boolean", "default": False}
    assert props["password"] == {"type": "string", "writeOnly": True}
    assert compiled.sensitive == frozenset({"password"})


def test_valid_args_get_defaults_filled_in() -> None:
    compiled = _params(
        {"name": "title", "required": True},
        {"name": "pageSize", "type": "integer", "default": 20},
        {"name": "draft", "type": "boolean", "default": False},
    )
    assert compiled.validate({"title": "Hi"}) == {"title": "Hi", "pageSize": 20, "draft": False}
    # An explicit null means "not given": the default applies.
    assert compiled.validate({"title": "Hi", "pageSize": None})["pageSize"] == 20


def test_missing_required_params_are_all_named() -> None:
    compiled = _params(
        {"name": "a", "required": True}, {"name": "b", "required": True}, {"name": "c"}
    )
    with pytest.raises(MissingArgumentsError) as caught:
        compiled.validate({"c": "x", "b": None})
    assert caught.value.status == 400
    assert caught.value.message == "Missing required parameters"
    assert caught.value.reason == "missing_parameters"
    assert [e["field"] for e in _field_errors(caught.value)] == ["a", "b"]


@pytest.mark.parametrize(
    ("param", "value", "fragment"),
    [
        ({"name": "n", "type": "integer"}, "3", "integer"),
        ({"name": "n", "type": "integer"}, True, "integer"),
        ({"name": "n", "type": "integer"}, 1.5, "integer"),
        ({"name": "n", "type": "number"}, "1", "number"),
        ({"name": "n", "type": "boolean"}, 2, "boolean"),
        ({"name": "n", "type": "string"}, 5, "string"),
        ({"name": "n", "type": "object"}, [], "object"),
        ({"name": "n", "type": "array"}, {}, "array"),
        ({"name": "n", "type": "integer", "min": 1}, 0, "bigger than or equal to 1"),
        ({"name": "n", "type": "integer", "max": 50}, 51, "smaller than or equal to 50"),
        ({"name": "n", "type": "string", "min": 2}, "a", "longer than or equal to 2"),
        ({"name": "n", "type": "string", "max": 3}, "abcd", "shorter than or equal to 3"),
        ({"name": "n", "type": "array", "max": 1}, [1, 2], "less than or equal to 1 items"),
        ({"name": "n", "enum": ["a", "b"]}, "c", "one of"),
        ({"name": "n", "pattern": "^[0-9]+$"}, "12a", "match pattern"),
    ],
)
def test_wrong_types_and_broken_constraints_name_the_field(
    param: dict[str, Any], value: Any, fragment: str
) -> None:
    compiled = _params(param)
    with pytest.raises(ArgumentsError) as caught:
        compiled.validate({"n": value})
    assert caught.value.status == 400
    assert caught.value.reason == "invalid_arguments"
    (error,) = _field_errors(caught.value)
    assert error["field"] == "n"
    assert fragment in error["message"]


def test_unknown_args_are_refused_by_name() -> None:
    compiled = _params({"name": "title"})
    with pytest.raises(ArgumentsError) as caught:
        compiled.validate({"title": "x", "admin": True})
    assert _field_errors(caught.value) == [{"field": "admin", "message": "unknown parameter"}]


def test_args_must_be_an_object() -> None:
    with pytest.raises(ArgumentsError):
        _params().validate(["not", "an", "object"])


def test_whole_floats_become_integers() -> None:
    assert _params({"name": "n", "type": "integer"}).validate({"n": 3.0}) == {"n": 3}


def test_injection_looking_strings_are_plain_data() -> None:
    compiled = _params({"name": "q"})
    value = "'; DROP TABLE accounts; -- <script>alert(1)</script>"
    assert compiled.validate({"q": value}) == {"q": value}


@pytest.mark.parametrize(
    ("params", "field", "fragment"),
    [
        ("nope", "params", "list"),
        ([{"name": "1bad"}], "params.0.name", "pattern"),
        ([{"name": "a"}, {"name": "a"}], "params.1.name", "duplicate"),
        ([{"name": "a", "colour": "red"}], "params.0.colour", "Extra"),
        ([{"name": "a", "type": "date"}], "params.0.type", "string"),
        ([{"name": "a", "type": "integer", "enum": [1, "2"]}], "params.0.enum.1", "integer"),
        ([{"name": "a", "enum": []}], "params.0.enum", "at least 1"),
        ([{"name": "a", "enum": ["x", "x"]}], "params.0.enum", "unique"),
        ([{"name": "a", "type": "integer", "min": 5, "max": 1}], "params.0.min", "greater"),
        ([{"name": "a", "type": "boolean", "min": 1}], "params.0.min", "boolean"),
        ([{"name": "a", "type": "string", "max": 1.5}], "params.0.max", "non-negative"),
        ([{"name": "a", "type": "integer", "pattern": "x"}], "params.0.pattern", "string"),
        ([{"name": "a", "pattern": "(unclosed"}], "params.0.pattern", "invalid"),
        ([{"name": "a", "pattern": "^(a+)+$"}], "params.0.pattern", "nested"),
        ([{"name": "a", "pattern": "x" * 501}], "params.0.pattern", "at most 500"),
        ([{"name": "a", "type": "integer", "default": "x"}], "params.0.default", "integer"),
        ([{"name": "a", "type": "integer", "max": 3, "default": 9}], "params.0.default", "3"),
        ([{"name": "a", "required": True, "default": "x"}], "params.0.default", "required"),
        ([{"name": "a", "description": "d" * 2001}], "params.0.description", "2000"),
    ],
)
def test_bad_param_definitions_name_the_attribute(params: Any, field: str, fragment: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_params(params)
    (error,) = _field_errors(caught.value)
    assert error["field"] == field
    assert fragment in error["message"]


def test_too_many_params_are_refused() -> None:
    with pytest.raises(DefinitionError):
        compile_params([{"name": f"p{i}"} for i in range(101)])


@pytest.mark.parametrize(
    "pattern", ["^(a+)+$", "(a*)*b", "(a|aa)+", "^(\\w+\\s?)*$", "((ab)*)+", "(?=(a+)+)x"]
)
def test_backtracking_patterns_are_refused_quickly(pattern: str) -> None:
    started = time.perf_counter()
    assert check_pattern(pattern) is not None
    assert time.perf_counter() - started < 0.05


@pytest.mark.parametrize("pattern", ["^[a-z]+$", "^\\d{3}-\\d{4}$", "^(ab|cd)$", "^(a{2}){3}$"])
def test_ordinary_patterns_are_accepted(pattern: str) -> None:
    assert check_pattern(pattern) is None


@pytest.mark.parametrize("pattern", ["a*a*a*b", "^a+b", "x+x+y", "^[a-z]+$", "^\\d{3}$"])
def test_patterns_run_on_a_linear_time_engine(pattern: str) -> None:
    # Python's engine backtracks polynomially without nested repeats too: `a*a*a*b` took 81 s
    # on 1,000 characters. A call's argument is matched by RE2 wherever RE2 can run the pattern.
    compiled = _params({"name": "n", "pattern": pattern})
    ((name, source, search),) = compiled.patterns
    assert (name, source) == ("n", pattern)
    assert type(search.__self__).__module__.startswith("re2")  # type: ignore[attr-defined]


def test_a_long_argument_against_a_polynomial_pattern_is_answered() -> None:
    compiled = _params({"name": "n", "pattern": "a*a*a*b"})
    with pytest.raises(ArgumentsError) as caught:
        compiled.validate({"n": "a" * 1_000_000})  # hours on Python's engine
    assert caught.value.details["errors"] == [
        {"field": "n", "message": "must match pattern a*a*a*b"}
    ]
    assert compiled.validate({"n": "a" * 1_000 + "b"}) == {"n": "a" * 1_000 + "b"}


def test_patterns_re2_cannot_run_keep_pythons_engine_and_meaning() -> None:
    # A lookahead (a password rule, say) is not RE2 syntax: it still works as it did.
    compiled = _params({"name": "pw", "pattern": "^(?=.*[0-9]).{8,}$"})
    assert compiled.validate({"pw": "abcdefg1"}) == {"pw": "abcdefg1"}
    with pytest.raises(ArgumentsError):
        compiled.validate({"pw": "abcdefgh"})
    # Digits are ASCII digits, as JSON Schema (ECMA-262) means `\d`.
    digits = _params({"name": "n", "pattern": "^\\d+$"})
    assert digits.validate({"n": "123"}) == {"n": "123"}
    with pytest.raises(ArgumentsError):
        digits.validate({"n": "١٢٣"})


def test_a_default_must_match_its_pattern() -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_params([{"name": "n", "pattern": "^[a-z]+$", "default": "ABC"}])
    assert caught.value.details["errors"][0]["field"] == "params.0.default"
    assert _params({"name": "n", "pattern": "^[a-z]+$", "default": "abc"}).validate({}) == {
        "n": "abc"
    }
