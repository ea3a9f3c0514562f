"""`size()` of a string counts Unicode code points, as CEL specifies and as the engine's own
`charAt`, `indexOf` and `substring` count: the Rust engine counted UTF-8 bytes, so `size('张三')`
was 6 and `s.substring(0, s.size())` failed on any non-ASCII text. Bytes, lists and maps keep
their sizes."""

import pytest

from apiforge.tools.expressions import ExpressionError, compile_expression

VARIABLES = {"args": {"name": "张三😀", "tags": ["a", "b"], "meta": {"k": 1}, "raw": "e\u0301"}}


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("size(args.name)", 3),
        ("args.name.size()", 3),
        ("size('中文')", 2),
        ("'👨\u200d👩\u200d👧'.size()", 5),  # a ZWJ sequence: five code points
        ("size(args.raw)", 2),  # no normalisation: `e` and a combining accent
        ("args.name.substring(0, args.name.size())", "张三😀"),
        ("args.name.charAt(args.name.size() - 1)", "😀"),
        ("size(b'\\xe4\\xb8\\xad')", 3),  # bytes count bytes
        ("size(args.tags) + args.tags.size()", 4),
        ("size(args.meta)", 1),
        ("[size('é'), 'size'.size(), {'size': 1}['size']]", [1, 4, 1]),
        ("args.tags.exists(t, t.size() == 1)", True),
    ],
)
def test_size_counts_code_points(source: str, expected: object) -> None:
    assert compile_expression(source).evaluate(VARIABLES) == expected


@pytest.mark.parametrize(("source", "kind"), [("size(1)", "int"), ("size(null)", "null")])
def test_size_of_a_value_without_one_is_an_error_naming_size(source: str, kind: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source).evaluate(VARIABLES)
    assert str(caught.value).startswith(
        f"Function 'size' error: size expects a string, bytes, a list or a map, not {kind}"
    )


def test_a_syntax_error_quotes_the_source_as_written() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("size(args.name) +")
    assert "| size(args.name) +" in str(caught.value)
