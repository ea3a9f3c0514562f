"""Field definitions and record data checks, and the field cipher."""

from datetime import UTC, datetime
from typing import Any, get_args

import pytest

from apiforge.datasets.crypto import DecryptionError, FieldCipher, cipher_for
from apiforge.datasets.schema import (
    FIELD_TYPES,
    MAX_NESTING,
    CollectionSchema,
    FieldSchema,
    normalise_datetime,
    validate_fields,
    validate_record,
)
from apiforge.datasets.schemas import FieldType


def schema(*fields: dict[str, Any]) -> CollectionSchema:
    return CollectionSchema.build(id="c", app_id="a", name="things", fields=fields)


def test_the_api_accepts_exactly_the_field_types_the_store_knows() -> None:
    assert get_args(FieldType) == FIELD_TYPES


def test_schema_round_trips_through_its_snapshot_form() -> None:
    original = schema({"name": "a", "type": "string", "unique": True, "default": None})
    assert CollectionSchema.build(**original.to_dict()) == original


@pytest.mark.parametrize(
    ("field", "where", "message"),
    [
        (FieldSchema("version", "integer"), "fields.0.name", "reserved"),
        # A filter reads these as its operators: such a field could never be filtered on.
        (FieldSchema("_and", "string"), "fields.0.name", "filter operator"),
        (FieldSchema("_or", "string"), "fields.0.name", "filter operator"),
        (FieldSchema("_not", "boolean"), "fields.0.name", "filter operator"),
        (FieldSchema("a-b", "string"), "fields.0.name", "identifier"),
        (FieldSchema("a", "money"), "fields.0.type", "must be one of"),
        (FieldSchema("a", "array", unique=True), "fields.0.unique", "array fields cannot"),
        (FieldSchema("a", "string", indexed=True, encrypted=True), "fields.0.indexed", "encrypted"),
        (FieldSchema("a", "boolean", default="yes"), "fields.0.default", "boolean"),
        (FieldSchema("a", "string", unique=True, default="x"), "fields.0.default", "unique"),
    ],
)
def test_invalid_field_definitions(field: FieldSchema, where: str, message: str) -> None:
    [error] = validate_fields([field])
    assert error["field"] == where
    assert message in error["message"]


def test_duplicate_names_and_too_many_fields() -> None:
    errors = validate_fields([FieldSchema("a", "string"), FieldSchema("a", "integer")])
    assert errors == [{"field": "fields.1.name", "message": "duplicate field 'a'"}]
    many = [FieldSchema(f"f{i}", "string") for i in range(101)]
    assert {"field": "fields", "message": "at most 100 fields"} in validate_fields(many)


@pytest.mark.parametrize(
    ("kind", "value", "stored"),
    [
        ("string", "", ""),
        ("integer", 7.0, 7),
        ("integer", -(2**63), -(2**63)),
        ("number", 1, 1),
        ("number", 2.5, 2.5),
        ("boolean", 1, True),
        ("boolean", False, False),
        ("datetime", "2024-02-29T23:30:00-01:00", "2024-03-01T00:30:00Z"),
        ("datetime", "2024-01-01T00:00:00", "2024-01-01T00:00:00Z"),
        ("datetime", datetime(2024, 1, 1, tzinfo=UTC), "2024-01-01T00:00:00Z"),
        ("object", {"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}),
        ("array", [], []),
    ],
)
def test_values_are_normalised(kind: str, value: Any, stored: Any) -> None:
    clean, errors = validate_record(schema({"name": "v", "type": kind}), {"v": value})
    assert errors == []
    assert clean == {"v": stored}
    assert type(clean["v"]) is type(stored)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("string", 5),
        ("integer", 1.5),
        ("integer", True),
        ("integer", 2**63),
        ("number", float("inf")),
        ("number", "1"),
        ("boolean", 2),
        ("boolean", "true"),
        ("datetime", "yesterday"),
        ("datetime", 20240101),
        ("object", []),
        ("array", {}),
    ],
)
def test_values_of_the_wrong_type_are_refused(kind: str, value: Any) -> None:
    clean, errors = validate_record(schema({"name": "v", "type": kind}), {"v": value})
    assert clean == {}
    assert [e["field"] for e in errors] == ["v"]


def test_deep_documents_are_refused_without_recursion() -> None:
    deep: Any = []
    for _ in range(100_000):  # far beyond Python's recursion limit
        deep = [deep]
    _, errors = validate_record(schema({"name": "v", "type": "array"}), {"v": deep})
    assert errors == [{"field": "v", "message": f"nests deeper than {MAX_NESTING} levels"}]


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("string", "a\x00b"),
        ("string", "\x00"),
        ("object", {"k\x00": 1}),
        ("object", {"a": {"b": ["ok", "x\x00"]}}),
        ("object", {"a": [{"deep\x00key": None}]}),
        ("array", ["ok", ["\x00"]]),
        ("array", [{"k\x00": 1}]),
    ],
)
def test_nul_characters_are_refused_anywhere_in_a_value(kind: str, value: Any) -> None:
    # PostgreSQL text and jsonb cannot hold NUL: refused on every backend, named by field.
    clean, errors = validate_record(schema({"name": "v", "type": kind}), {"v": value})
    assert clean == {}
    assert errors == [{"field": "v", "message": "cannot contain NUL characters"}]


def test_a_nul_in_a_default_is_refused_when_the_field_is_saved() -> None:
    problems = validate_fields([FieldSchema("v", "string", default="a\x00")])
    assert problems == [{"field": "fields.0.default", "message": "cannot contain NUL characters"}]


def test_required_defaults_and_nulls() -> None:
    s = schema(
        {"name": "title", "type": "string", "required": True},
        {"name": "state", "type": "string", "required": True, "default": "draft"},
        {"name": "note", "type": "string"},
    )
    clean, errors = validate_record(s, {"title": "t", "note": None})
    assert (clean, errors) == ({"title": "t", "state": "draft"}, [])
    clean, errors = validate_record(s, {"state": None})
    assert clean == {"state": "draft"}
    assert errors == [{"field": "title", "message": "is required"}]
    patch, errors = validate_record(s, {"note": None, "title": None}, partial=True)
    assert patch == {"note": None}
    assert errors == [{"field": "title", "message": "is required"}]


def test_normalise_datetime_refuses_garbage() -> None:
    assert normalise_datetime("2024-13-01T00:00:00Z") is None
    assert normalise_datetime("x" * 1000) is None
    assert normalise_datetime(None) is None
    # An offset that carries the time past year 1 or 9999 in UTC is refused, not a 500.
    assert normalise_datetime("0001-01-01T00:00:00+01:00") is None
    assert normalise_datetime("9999-12-31T23:59:59-01:00") is None


def test_normalise_datetime_pads_early_years_so_text_order_is_time_order() -> None:
    early, late = normalise_datetime("0999-06-01T00:00:00Z"), normalise_datetime("1999-06-01")
    assert early == "0999-06-01T00:00:00Z"
    assert late == "1999-06-01T00:00:00Z"
    assert early < late
    assert normalise_datetime("2026-01-01T10:00:00.75+02:00") == "2026-01-01T08:00:00Z"


def test_cipher_round_trip_and_refusals() -> None:
    cipher = FieldCipher("server secret " * 4)
    token = cipher.encrypt({"card": "4111"})
    assert "4111" not in token
    assert cipher.decrypt(token) == {"card": "4111"}
    assert cipher.encrypt("same") != cipher.encrypt("same")  # random IV per value
    with pytest.raises(DecryptionError):
        FieldCipher("another secret " * 4).decrypt(token)
    with pytest.raises(DecryptionError):
        cipher.decrypt(token[:-4] + "AAAA")
    with pytest.raises(DecryptionError):
        cipher.decrypt(42)
    assert "secret" not in repr(cipher)
    assert cipher_for("k" * 40) is cipher_for("k" * 40)
    with pytest.raises(ValueError, match="secret is required"):
        FieldCipher("")
