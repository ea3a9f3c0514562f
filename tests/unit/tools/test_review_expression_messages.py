"""Review: a failing string helper is described in the builder's terms, not Python's."""

import pytest

from apiforge.tools.expressions import ExpressionError, compile_expression


@pytest.mark.parametrize(
    ("source", "kept"),
    [
        ("'abc'.substring(5)", "substring: [5:3] out of range for string of length 3"),
        ("'abc'.charAt(-1)", "charAt: index -1 out of range for string of length 3"),
        ("[1].join()", "join expects a list of strings"),
    ],
)
def test_helper_failures_do_not_name_python_exceptions(source: str, kept: str) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(source).evaluate({})
    message = str(caught.value)
    assert kept in message
    assert "Python" not in message
    assert "Error:" not in message
