"""Parsing of the idempotency headers and the ids derived from them."""

import pytest

from apiforge.core.errors import ValidationError
from apiforge.idempotency.keys import (
    fingerprint,
    fingerprint_key,
    parse_key,
    parse_seq,
    principal,
    record_id,
    token_id,
)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("abc", "abc"),
        ('"abc"', "abc"),
        ("  abc  ", "abc"),
        ('"a key with spaces"', "a key with spaces"),
        ("k" * 255, "k" * 255),
        ('"' + "k" * 255 + '"', "k" * 255),
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        # RFC 8941 escapes in a quoted key; 255 characters once unescaped.
        ('"say \\"hi\\""', 'say "hi"'),
        ('"back\\\\slash"', "back\\slash"),
        ('"' + '\\"' * 255 + '"', '"' * 255),
    ],
)
def test_bare_and_quoted_keys(raw: str, key: str) -> None:
    assert parse_key(raw) == key


@pytest.mark.parametrize(
    "raw",
    [
        *("", '""', "k" * 256, '"' + "k" * 256 + '"', "a b", '"a"b"', "a\\b", "é", "\x00", '"'),
        *('"a\\b"', '"a\\"', '"' + '\\"' * 256 + '"', '"\\\\\\"'),
    ],
)
def test_malformed_keys_are_refused(raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_key(raw)
    assert caught.value.reason == "invalid_idempotency_key"
    assert caught.value.details["errors"][0]["field"] == "Idempotency-Key"


def test_sequence_numbers() -> None:
    assert parse_seq(" 42 ") == "42"
    assert parse_seq("2026-11-21:0001.a_b") == "2026-11-21:0001.a_b"
    for bad in ("", "x" * 65, "a b", "1/2", "-" * 70):
        with pytest.raises(ValidationError) as caught:
            parse_seq(bad)
        assert caught.value.reason == "invalid_request_seq"


def test_record_ids_separate_kinds_scopes_and_keys() -> None:
    base = record_id("key", "ws|key:1", "k")
    assert len(base) == 64
    assert base == record_id("key", "ws|key:1", "k")
    assert base != record_id("seq", "ws|key:1", "k")
    assert base != record_id("key", "ws|key:2", "k")
    assert base != record_id("key", "ws|key:1", "k2")
    # No ambiguity from separators inside the parts.
    assert record_id("key", "a", "b\x00c") != record_id("key", "a\x00b", "c")


def test_fingerprints_cover_method_path_query_and_exact_body() -> None:
    key = fingerprint_key("server-secret-" + "s" * 40)
    base = fingerprint(key, "POST", "/api/v1/apps", "", b'{"a":1}')
    assert base == fingerprint(key, "POST", "/api/v1/apps", "", b'{"a":1}')
    assert base != fingerprint(key, "PUT", "/api/v1/apps", "", b'{"a":1}')
    assert base != fingerprint(key, "POST", "/api/v1/apps/x", "", b'{"a":1}')
    assert base != fingerprint(key, "POST", "/api/v1/apps", "q=1", b'{"a":1}')
    assert base != fingerprint(key, "POST", "/api/v1/apps", "", b'{"a": 1}')


def test_token_ids_and_principals() -> None:
    assert token_id("short") is None
    assert token_id("x" * 129) is None
    assert token_id("bad token with spaces") is None
    digest = token_id("A" * 43)
    assert digest is not None
    assert len(digest) == 64
    assert principal("k1", "a1") == "key:k1"
    assert principal(None, "a1") == "acct:a1"
    assert principal(None, None) is None


def test_the_documented_max_length_admits_the_longest_key_the_parser_takes() -> None:
    from apiforge.idempotency.openapi import HEADERS

    longest = '"' + '\\"' * 255 + '"'  # 255 escaped quotes: one key of 255 characters
    assert parse_key(longest) == '"' * 255
    (documented,) = [h for h in HEADERS if h["name"] == "Idempotency-Key"]
    assert len(longest) <= documented["schema"]["maxLength"]
