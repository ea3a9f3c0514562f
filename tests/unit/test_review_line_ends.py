"""Names and versions checked with a regular expression end where the text ends: Python's `$`
also matches before a final newline, so `"posts\\n"` passed as the name `posts` and then failed
later (a 502 from an upstream that refused the header, a lookup that found nothing)."""

import pytest

from apiforge.builder.definitions import pinned_versions
from apiforge.datasets.schema import is_name
from apiforge.engine.compiler import parse_step
from apiforge.engine.errors import DefinitionError
from apiforge.engine.steps.http import _header_name_problem
from apiforge.tools.netguard import NetGuardError, _normalise_name


def test_a_collection_or_field_name_has_no_trailing_newline() -> None:
    assert is_name("posts")
    assert not is_name("posts\n")


def test_a_step_id_has_no_trailing_newline() -> None:
    parse_step({"id": "a", "type": "return", "value": 1}, "steps[0]")
    with pytest.raises(DefinitionError):
        parse_step({"id": "a\n", "type": "return", "value": 1}, "steps[0]")


def test_an_http_header_name_has_no_trailing_newline() -> None:
    assert _header_name_problem("X-Trace") is None
    assert _header_name_problem("X-Trace\n") == "invalid header name 'X-Trace\\n'"


def test_a_host_name_label_has_no_trailing_newline() -> None:
    assert _normalise_name("example.com") == "example.com"
    with pytest.raises(NetGuardError):
        _normalise_name("example.com\n")


def test_a_pinned_version_has_no_trailing_newline() -> None:
    steps = [
        {"id": "a", "type": "callApi", "api": "x", "version": "1.0.0"},
        {"id": "b", "type": "callApi", "api": "y", "version": "1.0.1\n"},
    ]
    assert list(pinned_versions(steps)) == ["1.0.0"]
