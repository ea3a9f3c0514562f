"""`check_json_value`: what an opaque setting value may hold, at the exact boundaries."""

from typing import Any

import pytest

from apiforge.accounts.settings_service import MAX_DEPTH, check_json_value
from apiforge.core.errors import PayloadTooLargeError, ValidationError


def _nested(depth: int) -> Any:
    value: Any = 1
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        2**63 - 1,
        -(2**63),
        1.5e300,
        "",
        "'; DROP TABLE accounts; --",
        {"": [], "é": {}},
        _nested(MAX_DEPTH),
    ],
)
def test_accepted_values(value: Any) -> None:
    check_json_value(value, field="value", max_bytes=64 * 1024)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (_nested(MAX_DEPTH + 1), "nest"),
        ({"a": float("nan")}, "finite"),
        ([float("inf")], "finite"),
        (2**63, "64 bits"),
        (-(2**63) - 1, "64 bits"),
        ("a\x00b", "NUL"),
        ({"\x00": 1}, "NUL"),
        ("\ud800", "surrogate"),
        ({"\udfff": 1}, "surrogate"),
        ((1, 2), "unsupported"),
        ({"a": {1, 2}}, "unsupported"),
    ],
)
def test_refused_values_name_the_field_and_the_problem(value: Any, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        check_json_value(value, field="value", max_bytes=64 * 1024)
    assert caught.value.reason == "invalid_setting_value"
    (error,) = caught.value.details["errors"]
    assert error["field"] == "value"
    assert message in error["message"]


def test_size_limit_is_inclusive_and_counts_compact_json() -> None:
    check_json_value({"a": "xx"}, field="body", max_bytes=len('{"a":"xx"}'))
    with pytest.raises(PayloadTooLargeError) as caught:
        check_json_value({"a": "xxx"}, field="body", max_bytes=len('{"a":"xx"}'))
    assert caught.value.status == 413
    assert caught.value.details == {"maxBytes": 10}


def test_depth_is_checked_before_serialising_a_huge_value() -> None:
    # A value orjson itself could not encode (too deep for it) still gets our clear 400.
    with pytest.raises(ValidationError):
        check_json_value(_nested(10_000), field="value", max_bytes=64 * 1024)
