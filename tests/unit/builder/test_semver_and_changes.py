"""Version numbering and the breaking-change report of a publish."""

from typing import Any

import pytest

from apiforge.builder.versions import compare, next_version, parse_version
from apiforge.core.errors import ConflictError


@pytest.mark.parametrize(
    ("latest", "bump", "expected"),
    [
        (None, "major", (1, 0, 0)),
        (None, "minor", (1, 0, 0)),
        (None, "patch", (1, 0, 0)),
        ("1.0.0", "patch", (1, 0, 1)),
        ("1.0.1", "minor", (1, 1, 0)),
        ("1.4.2", "major", (2, 0, 0)),
        ("9.9.9", "patch", (9, 9, 10)),
    ],
)
def test_next_version_bumps_from_latest_and_starts_at_1_0_0(
    latest: str | None, bump: str, expected: tuple[int, int, int]
) -> None:
    assert next_version(latest, bump) == expected


@pytest.mark.parametrize("text", ["1.0", "01.0.0", "1.0.0-beta", "v1.0.0", "latest", "", "1.0.0 "])
def test_parse_version_accepts_only_plain_semver(text: str) -> None:
    assert parse_version(text) is None


@pytest.mark.parametrize(
    ("latest", "bump"),
    [("999999999.0.0", "major"), ("1.999999999.5", "minor"), ("1.2.999999999", "patch")],
)
def test_no_version_is_numbered_past_what_pins_and_invocations_can_name(
    latest: str, bump: str
) -> None:
    """`999999999.0.0` bumped to `1000000000.0.0`: a version `parse_version` (and so every
    read, pin and invocation of it) no longer recognised."""
    with pytest.raises(ConflictError) as caught:
        next_version(latest, bump)
    assert caught.value.status == 409
    assert caught.value.reason == "version_limit_reached"


def test_the_largest_version_parts_parse() -> None:
    assert parse_version("999999999.999999999.999999999") == (999999999,) * 3
    assert parse_version("1000000000.0.0") is None


def _api(*params: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"params": list(params), "steps": [], "auth": {}, **extra}


def _kinds(latest: dict[str, Any], dev: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    return [(c.api, c.kind, c.param, c.breaking) for c in compare(latest, dev)]


def test_removed_api_is_breaking_and_added_api_is_not() -> None:
    assert _kinds({"a": _api(), "b": _api()}, {"a": _api(), "c": _api()}) == [
        ("b", "api_removed", "", True),
        ("c", "api_added", "", False),
    ]


def test_param_changes_are_classified() -> None:
    latest = {
        "a": _api(
            {"name": "page", "type": "integer"},
            {"name": "q", "type": "string"},
            {"name": "old"},
            {"name": "tag", "required": False},
        )
    }
    dev = {
        "a": _api(
            {"name": "page", "type": "string"},
            {"name": "q", "type": "string"},
            {"name": "tag", "required": True},
            {"name": "limit", "type": "integer"},
            {"name": "org", "required": True},
        )
    }
    assert sorted(_kinds(latest, dev)) == sorted(
        [
            ("a", "param_type_changed", "page", True),
            ("a", "param_now_required", "tag", True),
            ("a", "param_added", "limit", False),
            ("a", "required_param_added", "org", True),
            ("a", "param_removed", "old", True),
        ]
    )


def test_type_defaults_to_string_on_both_sides() -> None:
    changes = _kinds({"a": _api({"name": "q"})}, {"a": _api({"name": "q", "type": "string"})})
    assert changes == [("a", "api_changed", "", False)]


def test_token_newly_required_is_breaking() -> None:
    latest = {"a": _api(auth={"requireToken": False})}
    dev = {"a": _api(auth={"requireToken": True, "mode": "none"})}
    assert _kinds(latest, dev) == [("a", "token_now_required", "", True)]


def test_other_changes_are_reported_but_not_breaking() -> None:
    latest = {"a": _api(price=1), "b": _api(description="x"), "c": _api(), "d": _api()}
    dev = {"a": _api(price=2), "b": _api(description="y"), "c": _api(), "d": _api(returnSteps=[])}
    assert _kinds(latest, dev) == [
        ("a", "price_changed", "", False),
        ("b", "docs_changed", "", False),
        ("d", "api_changed", "", False),
    ]


def test_narrowed_params_are_breaking_and_widened_ones_are_not() -> None:
    latest = {
        "a": _api(
            {"name": "lang", "enum": ["en", "fr"]},
            {"name": "size", "type": "integer", "min": 1, "max": 100},
            {"name": "code", "pattern": "^[a-z]+$"},
            {"name": "tag"},
            {"name": "n", "type": "integer", "max": 10},
        )
    }
    narrowed = {
        "a": _api(
            {"name": "lang", "enum": ["en"]},
            {"name": "size", "type": "integer", "min": 1, "max": 50},
            {"name": "code", "pattern": "^[a-z]{1,8}$"},
            {"name": "tag", "enum": ["x"], "max": 20},
            {"name": "n", "type": "integer", "min": 0, "max": 10},
        )
    }
    assert sorted(_kinds(latest, narrowed)) == [
        ("a", "param_enum_narrowed", "lang", True),
        ("a", "param_enum_narrowed", "tag", True),
        ("a", "param_pattern_changed", "code", True),
        ("a", "param_range_narrowed", "n", True),
        ("a", "param_range_narrowed", "size", True),
        ("a", "param_range_narrowed", "tag", True),
    ]
    widened = {
        "a": _api(
            {"name": "lang", "enum": ["en", "fr", "de"]},
            {"name": "size", "type": "integer", "min": 0},
            {"name": "code"},
            {"name": "tag"},
            {"name": "n", "type": "integer", "max": 11},
        )
    }
    assert _kinds(latest, widened) == [("a", "api_changed", "", False)]


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        ({"public": True}, {"public": False}, "public_removed"),
        ({}, {"requireIdempotencyKey": True}, "idempotency_key_now_required"),
        (
            {"requireToken": True, "mode": "none"},
            {"requireToken": True, "mode": "admin"},
            "permission_mode_changed",
        ),
        (
            {"requireToken": True, "mode": "simple", "rights": ["a", "b"]},
            {"requireToken": True, "mode": "simple", "rights": ["a"]},
            "rights_narrowed",
        ),
        (
            {"requireToken": True, "mode": "userSystem", "rights": ["a"], "target": {"x": "1"}},
            {"requireToken": True, "mode": "userSystem", "rights": ["a"], "target": {"x": "2"}},
            "permission_target_changed",
        ),
    ],
)
def test_auth_changes_that_refuse_callers_are_breaking(
    before: dict[str, Any], after: dict[str, Any], kind: str
) -> None:
    assert _kinds({"a": _api(auth=before)}, {"a": _api(auth=after)}) == [("a", kind, "", True)]
    # The other way round lets more callers in: a change, not a break (another target is
    # another set of callers either way).
    back = _kinds({"a": _api(auth=after)}, {"a": _api(auth=before)})
    if kind == "permission_target_changed":
        assert back == [("a", kind, "", True)]
    else:
        assert back == [("a", "api_changed", "", False)]


def test_disabling_an_api_is_breaking() -> None:
    assert _kinds({"a": _api(enabled=True)}, {"a": _api(enabled=False)}) == [
        ("a", "api_disabled", "", True)
    ]
    assert _kinds({"a": _api(enabled=False)}, {"a": _api(enabled=True)}) == [
        ("a", "api_changed", "", False)
    ]
