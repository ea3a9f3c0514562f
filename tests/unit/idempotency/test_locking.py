"""`If-Match` parsing and matching: strong comparison of the exact tag, lists, `*`, weak tags."""

import pytest

from apiforge.idempotency.locking import (
    PreconditionFailedError,
    PreconditionRequiredError,
    etag,
    parse_if_match,
)


@pytest.mark.parametrize("header", ['"1"', ' "1" ', '"7", "1"', '"7","1"', 'W/"1", "1"', "*"])
def test_a_header_naming_the_current_tag_matches(header: str) -> None:
    parse_if_match(header).check(1)


@pytest.mark.parametrize(
    "header",
    [
        '"01"',  # the same number, another tag: strong comparison is character for character
        '"+1"',
        '" 1"',
        '"1 "',
        '"1.0"',
        '"0x1"',
        'W/"1"',  # weak tags never match
        'w/"1"',
        '"2", W/"1"',
        "1",  # not a quoted tag
        '"1',
        "",
        ",",
        '"1"x',
    ],
)
def test_any_other_tag_fails_the_precondition(header: str) -> None:
    with pytest.raises(PreconditionFailedError):
        parse_if_match(header).check(1)


def test_only_the_canonical_tag_of_a_version_matches() -> None:
    assert etag(30) == '"30"'
    parse_if_match('"30"').check(30)
    # Numerically 30 all of them (int() reads other scripts' digits too), yet other tags.
    for header in ('"030"', '"+30"', '"\u0663\u0660"', '"\uff13\uff10"'):
        with pytest.raises(PreconditionFailedError):
            parse_if_match(header).check(30)


def test_no_header_checks_nothing_unless_required() -> None:
    parse_if_match(None).check(3)
    with pytest.raises(PreconditionRequiredError):
        parse_if_match(None).check(3, required=True)
    parse_if_match('"3"').check(3, required=True)


def test_a_tag_that_is_not_a_version_is_compared_exactly() -> None:
    digest = "9e107d9d372bb6826bd81d3542a419d6"
    parse_if_match(f'"{digest}"').check_tag(digest)
    parse_if_match("*").check_tag(digest)
    parse_if_match(None).check_tag(digest)
    for header in (f'W/"{digest}"', f'"{digest.upper()}"', '"1"'):
        with pytest.raises(PreconditionFailedError):
            parse_if_match(header).check_tag(digest)
