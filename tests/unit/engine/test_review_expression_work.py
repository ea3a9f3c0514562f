"""Review: one expression may not hold the process for seconds or allocate gigabytes.

The CEL engine copies every intermediate value whole and cannot be interrupted (it holds the
GIL), so growth has to be refused before it starts: chained `map(x, x + x)` doubles its input at
each link, `a + a + ... + a` costs the square of its length, and a literal list is a range to
iterate like a list argument. Each of these ran for seconds to minutes (or exhausted memory)
before the fix; ordinary expressions over ordinary data still run.
"""

import time
from typing import Any

import pytest

from apiforge.tools.expressions import ExpressionError, compile_expression

FAST = 1.0  # a refusal is decided before the engine runs: far below this


def literal_list(n: int) -> str:
    return "[" + ",".join(["0"] * n) + "]"


HOSTILE: list[tuple[str, str, dict[str, Any]]] = [
    # 2^30 x 10 characters: about 10 GB, built in one call of the engine
    ("doubling-map-chain", "['aaaaaaaaaa']" + ".map(x, x + x)" * 30 + "[0].size()", {}),
    # a list that grows 4x per link
    ("list-map-chain", "[1]" + ".map(x, [x, x, x, x])" * 15 + ".size()", {}),
    # 500 concatenations of a 1 MB argument: 85 s of copying measured
    ("concatenation-chain", "+".join(["args.s"] * 500) + " == ''", {"args": {"s": "a" * 10**6}}),
    # no argument at all: two nested maps over 990-item literals, 75 s measured
    ("nested-literal-ranges", f"{literal_list(990)}.map(x, {literal_list(990)}.map(y, x))", {}),
    # 1,400 copies of a 1 MB argument, copied again as the list grows: 300 s and 4 GB measured
    (
        "literal-range-of-big-values",
        f"{literal_list(1400)}.map(x, args.s).size()",
        {"args": {"s": "a" * 10**6}},
    ),
    # replace builds 250,000 characters from two short literals, 1,300 times over
    (
        "replace-in-a-literal-range",
        f"{literal_list(1300)}.map(x, 'a'.replace('a', '{'a' * 500}')"
        f".replace('a', '{'a' * 500}')).size()",
        {},
    ),
    # split makes a 100,000-item range out of one string
    ("split-range", "args.s.split('').map(x, x).size()", {"args": {"s": "a" * 100_000}}),
]


@pytest.mark.parametrize(
    ("source", "variables"), [pytest.param(s, v, id=name) for name, s, v in HOSTILE]
)
def test_growing_expressions_are_refused_before_running(
    source: str, variables: dict[str, Any]
) -> None:
    compiled = compile_expression(source)
    started = time.perf_counter()
    with pytest.raises(ExpressionError, match="too much work"):
        compiled.evaluate(variables)
    assert time.perf_counter() - started < FAST


ORDINARY: list[tuple[str, dict[str, Any]]] = [
    (
        "args.items.map(x, x.name + ' ' + x.surname).size()",
        {"args": {"items": [{"name": "n" * 50, "surname": "s" * 50}] * 1000}},
    ),
    (
        "args.items.filter(x, x.price > 0).map(x, x.price * x.qty).size()",
        {"args": {"items": [{"price": 1, "qty": 2, "note": "a" * 100}] * 1000}},
    ),
    (
        "'Hello ' + args.name + ', welcome to ' + env.site + '!' != ''",
        {"args": {"name": "a" * 400_000}, "env": {"site": "x"}},
    ),
    ("args.tags.map(t, t.replace('-', ' ')).join(', ') != ''", {"args": {"tags": ["a-b"] * 200}}),
    (
        "steps.posts.list.map(p, p.title).size()",
        {"steps": {"posts": {"list": [{"title": "t", "body": "b" * 10_000}] * 100}}},
    ),
    ("[1, 2, 3].map(x, [4, 5].map(y, x * y)).size()", {}),
    (" + ".join(["args.s"] * 100) + " != ''", {"args": {"s": "a" * 1000}}),
    ("args.s + args.s != ''", {"args": {"s": "a" * 400_000}}),
]


@pytest.mark.parametrize(("source", "variables"), ORDINARY)
def test_ordinary_expressions_still_run(source: str, variables: dict[str, Any]) -> None:
    assert compile_expression(source).evaluate(variables) not in (None, False)
