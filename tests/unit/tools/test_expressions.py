"""The guarded CEL engine: values over args/steps/token/env/now, errors, guards and limits."""

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import cel
import pytest

from apiforge.tools import expressions
from apiforge.tools.expressions import (
    MAX_COMPREHENSION_NESTING,
    MAX_NESTING,
    MAX_RESULT_CHARS,
    MAX_SOURCE_CHARS,
    CompiledExpression,
    ExpressionError,
    compile_expression,
    referenced_steps,
)

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
VARIABLES: dict[str, Any] = {
    "args": {
        "pageSize": 20,
        "name": "  Ada Lovelace ",
        "tags": ["math", "poetry"],
        "items": [{"price": 2.5, "qty": 2}, {"price": 10.0, "qty": 1}],
        "since": "2024-05-01T00:00:00Z",
        "missing": None,
    },
    "token": {"sub": "user-1", "roles": ["admin"]},
    "steps": {
        "posts": {"list": [{"title": "first", "views": 3}, {"title": "second", "views": 9}]},
        "count": 2,
    },
    "env": {"config": {"currency": "EUR"}},
    "now": NOW,
}


def run(source: str, variables: dict[str, Any] | None = None) -> Any:
    return compile_expression(source).evaluate(VARIABLES if variables is None else variables)


# --- values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("7 / 2", 3),
        ("7 % 3", 1),
        ("7.0 / 2.0", 3.5),
        ("-args.pageSize + 1", -19),
        ("args.pageSize * 2 <= 50", True),
        ("args.pageSize > 10 && args.pageSize < 20", False),
        ("args.pageSize == 20 || false", True),
        ("'abc' < 'abd'", True),
        ("args.pageSize != 20 ? 'no' : 'yes'", "yes"),
        ("!(1 in [1, 2])", False),
        ("int('42') + int(2.9)", 44),
        ("double(args.pageSize) / 8.0", 2.5),
        ("string(args.pageSize) + 'x'", "20x"),
    ],
)
def test_arithmetic_logic_and_comparisons(source: str, expected: Any) -> None:
    result = run(source)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("size(args.name)", 15),
        ("args.name.size()", 15),
        ("args.name.contains('Love')", True),
        ("args.name.trim().startsWith('Ada')", True),
        ("args.name.endsWith('x')", False),
        ("args.name.matches('^\\\\s+Ada')", True),
        ("args.name.trim().lowerAscii()", "ada lovelace"),
        ("args.name.trim().upperAscii()", "ADA LOVELACE"),
        ("args.name.trim().split(' ')", ["Ada", "Lovelace"]),
        ("args.tags.join(', ')", "math, poetry"),
        ("args.name.trim().replace('a', '4')", "Ad4 Lovel4ce"),
        ("args.name.trim().substring(4)", "Lovelace"),
        ("args.name.trim().indexOf('Love')", 4),
        ("args.name.trim().charAt(0)", "A"),
        ("'#' + token.sub + '/' + env.config.currency", "#user-1/EUR"),
    ],
)
def test_string_functions(source: str, expected: Any) -> None:
    assert run(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("steps.posts.list[1].title", "second"),
        ("steps['posts'].list.size() == steps.count", True),
        ("args.tags[0]", "math"),
        ("'poetry' in args.tags", True),
        ("'admin' in token.roles", True),
        ("steps.posts.list.map(p, p.title)", ["first", "second"]),
        ("steps.posts.list.filter(p, p.views > 5).map(p, p.title)", ["second"]),
        ("steps.posts.list.all(p, p.views > 0)", True),
        ("steps.posts.list.exists(p, p.views > 5)", True),
        ("steps.posts.list.exists_one(p, p.views > 0)", False),
        ("args.items.map(i, i.price * double(i.qty))", [5.0, 10.0]),
        ("{'n': args.pageSize, 'tags': args.tags}", {"n": 20, "tags": ["math", "poetry"]}),
        ("args.missing == null", True),
        ("[args.tags, [1, 2.5, true, null]]", [["math", "poetry"], [1, 2.5, True, None]]),
    ],
)
def test_map_and_list_access_over_args_and_steps(source: str, expected: Any) -> None:
    assert run(source) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("has(args.pageSize)", True),
        ("has(args.pageNo)", False),
        ("has(token.sub)", True),
        ("has(args.pageNo) ? args.pageNo : 1", 1),
        ("has(steps.posts) && !has(steps.other)", True),
    ],
)
def test_has_tests_for_presence(source: str, expected: Any) -> None:
    assert run(source) == expected


def test_now_is_a_timestamp_and_timestamps_come_back_as_iso_text() -> None:
    assert run("now") == "2024-05-06T07:08:09Z"
    assert run("now - duration('1h')") == "2024-05-06T06:08:09Z"
    assert run("timestamp(args.since) < now") is True
    assert run("now.getFullYear()") == 2024
    naive = {**VARIABLES, "now": datetime(2024, 5, 6, 7, 8, 9)}  # read as UTC
    assert run("now", naive) == "2024-05-06T07:08:09Z"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("duration('90m')", "5400s"),
        ("duration('-1.5s')", "-1.5s"),
        ("duration('1ms')", "0.001s"),
        ("b'hi'", "aGk="),
        ("{1: 'one'}", {"1": "one"}),
        ("{true: 'yes'}", {"true": "yes"}),
        ("optional.of(3)", 3),
        ("optional.none()", None),
        ("type(1)", "int"),
        ("1u + 2u", 3),
    ],
)
def test_results_are_plain_json_like_values(source: str, expected: Any) -> None:
    assert run(source) == expected


def test_a_compiled_expression_is_reused_across_calls() -> None:
    compiled = compile_expression("args.n * 2")
    assert compiled.evaluate({"args": {"n": 1}}) == 2
    assert compiled.evaluate({"args": {"n": 21}}) == 42
    assert compiled.source == "args.n * 2"
    assert repr(compiled) == "CompiledExpression('args.n * 2')"


def test_only_variables_the_expression_reads_are_handed_to_the_engine() -> None:
    unconvertible = object()  # the engine refuses it: reading it at all would fail
    variables = {"args": {"n": 1}, "env": unconvertible, "steps": {"a": 2, "b": unconvertible}}
    assert compile_expression("args.n + steps.a").evaluate(variables) == 3
    assert compile_expression("has(steps.c)").evaluate(variables) is False
    with pytest.raises(ExpressionError):
        compile_expression("steps[args.k]").evaluate({**variables, "args": {"k": "a"}})


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("nope + 1", "Undefined variable or function: 'nope'"),
        ("args.pageNo", "no such key: 'pageNo'"),
        ("args.tags[5]", "out of bounds"),
        ("'a' + 1", "string \\+ int"),
        ("args.name + args.pageSize", "string \\+ int"),
        ("1 / 0", "division by zero"),
        ("1 % 0", "modulo by zero"),
        ("9223372036854775807 + 1", "overflow"),
        ("int('x')", "int"),
        ("args.name.matches('[')", "not a valid regex"),
        ("args.missing.x", "No such overload"),
        ("args.name.nope()", "Undefined variable or function: 'nope'"),
        ("args.tags.join(1)", "join"),
    ],
)
def test_evaluation_failures_are_expression_errors(source: str, message: str) -> None:
    compiled = compile_expression(source)
    with pytest.raises(ExpressionError, match=message):
        compiled.evaluate(VARIABLES)


def test_string_of_a_timestamp_is_the_platform_format() -> None:
    """`string(now)` gave `2024-05-06T07:08:09.250000+00:00` while `now` itself, and every time
    the API writes, read `2024-05-06T07:08:09Z`."""
    exact = {**VARIABLES, "now": datetime(2024, 5, 6, 7, 8, 9, 250_000, tzinfo=UTC)}
    assert run("string(now)", exact) == run("now", exact) == "2024-05-06T07:08:09Z"
    assert run("'at ' + string(now - duration('1h'))") == "at 2024-05-06T06:08:09Z"
    assert run("string(timestamp('2024-05-06T09:08:09+02:00'))") == "2024-05-06T07:08:09Z"
    assert run("timestamp(string(now)) == now") is True
    assert run("string(now) < string(now + duration('1s'))") is True
    # Other values convert as the engine converts them.
    assert run("string(1.5) + string(2) + string(3u) + string(b'x') + string('y')") == "1.523xy"
    assert run("string(duration('90s'))") == "1m30s"
    with pytest.raises(ExpressionError, match="'string' error: string cannot convert bool"):
        run("string(true)")


def test_unknown_variables_fail_at_evaluation() -> None:
    compiled = compile_expression("token.sub")
    with pytest.raises(ExpressionError, match="Undefined variable"):
        compiled.evaluate({"args": {}})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("1 +", "Syntax error"),
        ("args.", "Syntax error|no viable alternative"),
        ("", "empty"),
        ("  // just a comment\n", "empty"),
        ("'open", "not closed"),
        ('"""never closed', "not closed"),
        ("args.`x`", "unsupported syntax"),
    ],
)
def test_invalid_sources_are_refused_when_compiled(source: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        compile_expression(source)


def test_syntax_errors_name_the_position_without_repeating_the_source() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("args.pageSize <= ")
    assert str(caught.value).startswith("ERROR: <input>:1:")
    assert "Failed to parse expression" not in str(caught.value)


def test_non_strings_are_refused() -> None:
    with pytest.raises(ExpressionError, match="must be a string"):
        compile_expression(42)  # type: ignore[arg-type]


class _Panic(BaseException):
    """Stands in for pyo3's PanicException, which derives from BaseException."""


class _Program:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def execute(self, context: Any) -> Any:
        raise self.error


def test_engine_panics_become_expression_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = compile_expression("args.n")
    monkeypatch.setattr(compiled, "_program", _Program(_Panic("rust panicked")))
    with pytest.raises(ExpressionError, match="rust panicked"):
        compiled.evaluate(VARIABLES)

    def panic(source: str) -> Any:
        raise _Panic("parser panicked")

    monkeypatch.setattr(cel, "compile", panic)
    with pytest.raises(ExpressionError, match="parser panicked"):
        compile_expression("1")


@pytest.mark.parametrize(
    "error", [KeyboardInterrupt(), SystemExit(1), asyncio.CancelledError(), GeneratorExit()]
)
def test_interrupts_and_cancellation_pass_through(
    monkeypatch: pytest.MonkeyPatch, error: BaseException
) -> None:
    compiled = compile_expression("args.n")
    monkeypatch.setattr(compiled, "_program", _Program(error))
    with pytest.raises(type(error)):
        compiled.evaluate(VARIABLES)


# --- guards ---------------------------------------------------------------------------------


def test_source_length_is_capped() -> None:
    padded = "1" + " " * (MAX_SOURCE_CHARS - 1)
    assert compile_expression(padded).evaluate({}) == 1
    with pytest.raises(ExpressionError, match=f"limited to {MAX_SOURCE_CHARS} characters"):
        compile_expression(padded + " ")


@pytest.mark.parametrize(("left", "right"), [("(", ")"), ("[", "]"), ("{1: ", "}")])
def test_bracket_nesting_is_capped(left: str, right: str) -> None:
    deepest = left * MAX_NESTING + "1" + right * MAX_NESTING
    compile_expression(deepest)
    with pytest.raises(ExpressionError, match=f"deeper than {MAX_NESTING}"):
        compile_expression(left + deepest + right)


def test_brackets_inside_strings_and_comments_do_not_count() -> None:
    source = "'" + "(" * 100 + "' + \"[[[[\" + r'{{{{' + '''((((''' // ((((((\n"
    assert compile_expression(source).evaluate({}) == "(" * 100 + "[[[[{{{{(((("


def test_comprehensions_nest_at_most_twice() -> None:
    two = "[[1, 2]].map(row, row.filter(x, x > 1))"
    assert compile_expression(two).evaluate({}) == [[2]]
    assert MAX_COMPREHENSION_NESTING == 2
    three = "[[[1]]].map(a, a.map(b, b.exists(c, c > 0)))"
    with pytest.raises(ExpressionError, match=r"comprehensions \(.*\) nest deeper than 2"):
        compile_expression(three)


def test_chained_comprehensions_are_not_nested() -> None:
    chained = "[1, 2, 3].filter(x, x > 1).map(x, x * 10).exists(x, x == 30)"
    assert compile_expression(chained).evaluate({}) is True
    in_receiver = "[1].map(a, [2].map(b, b)).map(c, [3].all(d, d > 0))"
    assert compile_expression(in_receiver).evaluate({}) == [True]


def test_macro_names_in_strings_or_as_fields_are_not_comprehensions() -> None:
    source = "'map(all(exists(' + string(args.map) + args.filter.all"
    variables = {"args": {"map": 1, "filter": {"all": "!"}}}
    assert compile_expression(source).evaluate(variables) == "map(all(exists(1!"


def test_malicious_sources_are_refused_in_milliseconds() -> None:
    attacks = [
        "1 + " * 25_000 + "1",  # 100 KB
        "(" * 10_000 + "1" + ")" * 10_000,
        "(" * 2_000 + ")" * 2_000,  # under the length cap
        "[1].map(x, " * 500 + "x" + ")" * 500,
        "[" * 4_000,
        "'" + "\\'" * 2_000,  # an escape-heavy, never-closed string
    ]
    started = time.perf_counter()
    for source in attacks:
        with pytest.raises(ExpressionError):
            compile_expression(source)
    assert time.perf_counter() - started < 0.05  # a sanity bound, not a benchmark


# --- limits ---------------------------------------------------------------------------------


def test_results_over_the_size_cap_are_refused() -> None:
    big = "x" * (MAX_RESULT_CHARS // 2 + 1)
    compiled = compile_expression("args.s + args.s")
    with pytest.raises(ExpressionError, match="larger than"):
        compiled.evaluate({"args": {"s": big}})
    listed = compile_expression("args.l")
    with pytest.raises(ExpressionError, match="larger than"):
        listed.evaluate({"args": {"l": [1] * (MAX_RESULT_CHARS // 20)}})
    assert compile_expression("size(args.s + args.s)").evaluate({"args": {"s": big}}) > 0


def test_string_helpers_that_could_amplify_check_the_size_first() -> None:
    with pytest.raises(ExpressionError, match="replace would make"):
        run("'ab'.replace('', args.s)", {"args": {"s": "x" * 400_000}})
    with pytest.raises(ExpressionError, match="join would make"):
        run("args.l.join(args.s)", {"args": {"l": ["a"] * 1_000, "s": "-" * 1_001}})
    assert run("'aaa'.replace('a', 'bb', 2)", {}) == "bbbba"


def test_deeply_nested_results_are_refused() -> None:
    deep: list[Any] = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ExpressionError, match="nests deeper"):
        run("args.deep", {"args": {"deep": deep}})


# --- references -----------------------------------------------------------------------------


def test_referenced_steps_lists_static_step_reads() -> None:
    source = "steps.a.x + steps['b'].y + size(steps.c) + (has(steps.d) ? 1 : 0)"
    compiled = compile_expression(source)
    assert referenced_steps(compiled) == {"a", "b", "c", "d"}
    assert referenced_steps(source) == {"a", "b", "c", "d"}
    assert compiled.reads_all_steps is False


def test_referenced_steps_ignores_strings_comments_and_other_fields() -> None:
    source = (
        "'steps.a' + \"steps.b\" + r'steps.c' + '''x\nsteps.d''' + b'steps.e'"
        " // steps.f\n + args.steps.g + steps.h"
    )
    assert referenced_steps(source) == {"h"}


def test_dynamic_step_reads_are_flagged() -> None:
    for source in ["steps[args.which]", "steps.size()", "steps.exists(k, k == 'a')", "steps"]:
        compiled = compile_expression(source)
        assert compiled.reads_all_steps, source
        assert compiled.steps == frozenset()
    assert compile_expression("steps['a\\n']").reads_all_steps  # an escape: not plainly known


def test_roots_name_outside_variables_without_macro_bound_ones() -> None:
    compiled = compile_expression("args.items.map(i, i.price + env.x) + token.list")
    assert compiled.roots == {"args", "env", "token"}
    assert compile_expression("1 + 2").roots == frozenset()


def test_referenced_steps_on_a_source_applies_the_guards() -> None:
    with pytest.raises(ExpressionError):
        referenced_steps("(" * 100)
    assert isinstance(compile_expression("steps.a"), CompiledExpression)
    assert sorted(expressions.MACROS) == ["all", "exists", "exists_one", "filter", "map"]


# --- work inside one evaluation ----------------------------------------------------------------


def test_nested_comprehensions_over_large_lists_are_refused_before_running() -> None:
    compiled = compile_expression("args.xs.map(a, args.xs.map(b, a + b))")
    big = {"args": {"xs": list(range(1000))}}  # 10^9 steps of work: would hang the worker
    started = time.perf_counter()
    with pytest.raises(ExpressionError, match="too much work"):
        compiled.evaluate(big)
    assert time.perf_counter() - started < 1.0
    small = {"args": {"xs": [1, 2, 3]}}
    assert compiled.evaluate(small) == [[2, 3, 4], [3, 4, 5], [4, 5, 6]]


def test_single_comprehension_bound_scales_with_depth() -> None:
    single = compile_expression("args.xs.map(a, a * 2)")
    assert single.evaluate({"args": {"xs": list(range(1000))}})[-1] == 1998
    with pytest.raises(ExpressionError, match="too much work"):
        single.evaluate({"args": {"xs": list(range(5000))}})


def test_huge_nested_payloads_are_refused_without_walking_them_all() -> None:
    compiled = compile_expression("args.rows.exists(r, r.size() > 2)")
    rows = [[0] * 10 for _ in range(20_000)]
    with pytest.raises(ExpressionError, match="too much work"):
        compiled.evaluate({"args": {"rows": rows}})


def test_expressions_without_comprehensions_are_not_bounded_by_list_size() -> None:
    compiled = compile_expression("args.xs.size()")
    assert compiled.evaluate({"args": {"xs": list(range(50_000))}}) == 50_000
