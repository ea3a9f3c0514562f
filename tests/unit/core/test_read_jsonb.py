"""`read_jsonb`: PostgreSQL's JSON text back to what was stored (whole-number floats from 2**63
on stay floats, at any depth); everything else exactly as orjson reads it."""

import orjson
import pytest

from apiforge.core.db import read_jsonb


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10000000000000000000", 1e19),
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ('{"a": 10000000000000000000, "b": {"c": [1, 18446744073709551615]}}',
         {"a": 1e19, "b": {"c": [1, 18446744073709551615.0]}}),
        ('[[[9223372036854775808]], {"k": [{"x": 12345678901234567890}]}]',
         [[[9223372036854775808.0]], {"k": [{"x": 12345678901234567890.0}]}]),
        ('{"phone": "12345678901234567890", "n": 5, "f": 1.5, "t": true, "z": null}',
         {"phone": "12345678901234567890", "n": 5, "f": 1.5, "t": True, "z": None}),
    ],
)  # fmt: skip
def test_whole_floats_past_int64_come_back_as_floats(text: str, expected: object) -> None:
    value = read_jsonb(text)
    assert value == expected
    # The types too: an int past 64 bits would be refused when the document is written back.
    assert orjson.dumps(value) == orjson.dumps(expected)
