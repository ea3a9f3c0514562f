"""A collection's typed fields: the rules a definition must follow and record data must match.

`CollectionSchema` is the immutable, compiled view of a `Collection` row (or of the copy frozen in a
published version's snapshot) that the record store, the data steps and the datasets API share.
`validate_fields` checks a field list when a collection is saved; `validate_record` checks and
normalises one record's data against the fields on every write.
"""

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from apiforge.tools.clock import iso
from apiforge.tools.filters import FIELD_OPERATORS, LOGICAL_OPERATORS

NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_NAME = re.compile(NAME_PATTERN)

FIELD_TYPES: Final = ("string", "integer", "number", "boolean", "object", "array", "datetime")
SCALAR_TYPES: Final = frozenset({"string", "integer", "number", "boolean", "datetime"})
# Every record carries these; a field of the same name would shadow them in the output.
RESERVED_NAMES: Final = frozenset({"id", "version", "createdTime", "updatedTime"})
# Names a filter reads as its own operators (`{"_and": [...]}`, and `{"_eq": ...}` where a field
# belongs): a field so named could never be filtered on.
FILTER_WORDS: Final = LOGICAL_OPERATORS | FIELD_OPERATORS
MAX_FIELDS: Final = 100
MAX_NESTING: Final = 32  # depth of object/array values; deeper documents are refused
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**63 - 1
# PostgreSQL text and jsonb cannot hold NUL; refused on every backend so both behave alike.
_NUL_MESSAGE: Final = "cannot contain NUL characters"


def is_name(text: object) -> bool:
    """Collection and field names: an identifier, so it can sit in a JSON path and SQL safely."""
    return isinstance(text, str) and _NAME.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class FieldSchema:
    name: str
    type: str
    required: bool = False
    unique: bool = False
    indexed: bool = False
    encrypted: bool = False
    default: Any = None

    @property
    def filterable(self) -> bool:
        """Encrypted values are ciphertext in the database: comparing them would mean nothing."""
        return not self.encrypted

    @property
    def sortable(self) -> bool:
        return not self.encrypted and self.type in SCALAR_TYPES

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "unique": self.unique,
            "indexed": self.indexed,
            "encrypted": self.encrypted,
            "default": self.default,
        }


# A field's name -> (type, encrypted): what the form of its stored values depends on.
FieldKinds = Mapping[str, tuple[str, bool]]


def field_kinds(fields: Iterable[Mapping[str, Any]]) -> FieldKinds:
    """`FieldKinds` of stored field dicts (a `Collection` row's `fields`)."""
    return {str(f["name"]): (str(f["type"]), bool(f.get("encrypted"))) for f in fields}


@dataclass(frozen=True, slots=True)
class Basis:
    """The collection as a schema was loaded with it: its `version` and its fields' kinds then.
    Every change of its fields bumps the version (`idempotency.locking.advance`), so while the
    version is the same the fields are these: a write can check the version, not read them."""

    version: int
    kinds: FieldKinds


@dataclass(frozen=True, slots=True)
class CollectionSchema:
    """What the engine and the store know of a collection; built once, shared read-only."""

    id: str
    app_id: str
    name: str
    fields: tuple[FieldSchema, ...]
    # A published version's snapshot: its writes keep values of fields removed since (see
    # `RecordStore._hold_fields`); any other schema means the collection as it is now.
    published: bool = False
    # The collection's version and fields when this schema was loaded (None: not known, every
    # write reads them; see `RecordStore._hold_fields`).
    basis: Basis | None = field(default=None, compare=False)
    _by_name: dict[str, FieldSchema] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({f.name: f for f in self.fields})

    def field(self, name: str) -> FieldSchema | None:
        return self._by_name.get(name)

    @property
    def encrypted_fields(self) -> tuple[FieldSchema, ...]:
        return tuple(f for f in self.fields if f.encrypted)

    @classmethod
    def build(
        cls,
        *,
        id: str,
        app_id: str,
        name: str,
        fields: Iterable[Mapping[str, Any]],
        published: bool = False,
        version: int | None = None,
        current: Iterable[Mapping[str, Any]] | None = None,
    ) -> "CollectionSchema":
        """From stored field dicts (a `Collection` row or a version snapshot), already valid.
        `version`: the collection's, read with its fields — `current`, which default to `fields`
        (a published snapshot's differ: give the collection's, read with that version)."""
        fields = list(fields)
        basis = None
        if version is not None:
            basis = Basis(version, field_kinds(fields if current is None else current))
        return cls(
            id=id,
            app_id=app_id,
            name=name,
            published=published,
            basis=basis,
            fields=tuple(
                FieldSchema(
                    name=str(f["name"]),
                    type=str(f["type"]),
                    required=bool(f.get("required", False)),
                    unique=bool(f.get("unique", False)),
                    indexed=bool(f.get("indexed", False)),
                    encrypted=bool(f.get("encrypted", False)),
                    default=f.get("default"),
                )
                for f in fields
            ),
        )

    def to_dict(self) -> dict[str, Any]:
        """The form a version snapshot freezes; `build(**to_dict())` gives it back."""
        return {
            "id": self.id,
            "app_id": self.app_id,
            "name": self.name,
            "fields": [f.to_dict() for f in self.fields],
        }


def validate_fields(fields: list[FieldSchema]) -> list[dict[str, str]]:
    """Problems of a field list as `[{field: "fields.<i>.<attr>", message}]`; empty when valid."""
    errors: list[dict[str, str]] = []
    if len(fields) > MAX_FIELDS:
        errors.append({"field": "fields", "message": f"at most {MAX_FIELDS} fields"})
    seen: set[str] = set()
    for i, f in enumerate(fields):
        where = f"fields.{i}"
        if not is_name(f.name):
            errors.append({"field": f"{where}.name", "message": "must be an identifier"})
        elif f.name in RESERVED_NAMES:
            errors.append({"field": f"{where}.name", "message": f"'{f.name}' is reserved"})
        elif f.name in FILTER_WORDS:
            errors.append({"field": f"{where}.name", "message": f"'{f.name}' is a filter operator"})
        elif f.name in seen:
            errors.append({"field": f"{where}.name", "message": f"duplicate field '{f.name}'"})
        seen.add(f.name)
        if f.type not in FIELD_TYPES:
            errors.append(
                {"field": f"{where}.type", "message": f"must be one of: {', '.join(FIELD_TYPES)}"}
            )
            continue
        for flag in ("unique", "indexed"):
            if not getattr(f, flag):
                continue
            if f.encrypted:
                errors.append(
                    {"field": f"{where}.{flag}", "message": f"encrypted fields cannot be {flag}"}
                )
            elif f.type not in SCALAR_TYPES:
                errors.append(
                    {"field": f"{where}.{flag}", "message": f"{f.type} fields cannot be {flag}"}
                )
        if f.default is not None:
            _, problem = coerce_value(f, f.default)
            if problem:
                errors.append({"field": f"{where}.default", "message": problem})
            elif f.unique:
                errors.append(
                    {"field": f"{where}.default", "message": "unique fields cannot have one"}
                )
    return errors


def normalise_datetime(value: Any) -> str | None:
    """ISO 8601 (naive: UTC) or a datetime -> `YYYY-MM-DDTHH:MM:SSZ`, which sorts as text."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and 10 <= len(value) <= 40:
        try:
            moment = datetime.fromisoformat(value.replace("z", "Z"))
        except ValueError:
            return None
    else:
        return None
    try:
        return iso(moment)
    except OverflowError:  # an offset that carries it past year 1 or 9999
        return None


def _text_problem(text: str) -> str | None:
    """Why a string cannot be stored as JSON text on every backend: a NUL, or a lone surrogate
    (`"\\ud800"` is valid JSON, but no UTF-8 encoder writes it)."""
    if "\x00" in text:
        return _NUL_MESSAGE
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:
            return "is not valid Unicode text"
    return None


# Inside object and array values a double from 2**53 on (every one is whole) is stored as the
# integer it equals, up to 64 bits: PostgreSQL's JSONB gives back those its JSON text writes with
# an exponent (1e16 on) as integers, SQLite's JSON as doubles. -0.0 is stored as 0.0 (JSONB has
# no negative zero). So a document reads back the same on every backend.
_WHOLE_FROM: Final = float(2**53)


def _document_problem(value: Any, limit: int) -> tuple[str | None, bool]:
    """Why an object/array value cannot be stored: nested deeper than `limit`, or anywhere
    inside a string or key `_text_problem` refuses, NaN or an infinity (the request parser
    accepts them, no JSON column does) or an integer beyond 64 bits. Also whether a double in it
    needs `_stored_document`. Iterative: no recursion to exhaust."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    odd = False
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return f"nests deeper than {limit} levels", odd
        if isinstance(item, str):
            problem = _text_problem(item)
            if problem:
                return problem, odd
        elif isinstance(item, float):
            if not math.isfinite(item):
                return "cannot hold NaN or an infinite number", odd
            odd = odd or _stored_number(item) is not item
        elif isinstance(item, int):
            if not INT_MIN <= item <= INT_MAX:
                return "holds an integer beyond 64 bits", odd
        elif isinstance(item, dict):
            for key in item:
                problem = _text_problem(key) if isinstance(key, str) else None
                if problem:
                    return problem, odd
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None, odd


def _stored_number(value: float) -> float | int:
    """A double inside a document as every backend gives it back (see `_WHOLE_FROM`)."""
    if value == 0.0:
        return 0.0 if math.copysign(1.0, value) < 0 else value
    if -_WHOLE_FROM < value < _WHOLE_FROM or not INT_MIN <= value < 2.0**63:
        return value
    return int(value)


def _stored_document(value: Any) -> Any:
    """A copy of a checked document with its doubles as `_stored_number` has them (the caller's
    value may be shared: a step's constant, a request's arguments). Its depth is bounded."""
    if isinstance(value, dict):
        return {key: _stored_document(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_stored_document(item) for item in value]
    if isinstance(value, float):
        return _stored_number(value)
    return value


def coerce_value(f: FieldSchema, value: Any) -> tuple[Any, str | None]:
    """The stored form of `value` for field `f`, or a message saying why it does not fit."""
    kind = f.type
    if kind == "string":
        if not isinstance(value, str):
            return None, "must be a string"
        problem = _text_problem(value)
        return (None, problem) if problem else (value, None)
    if kind == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            return None, "must be an integer"
        return (value, None) if INT_MIN <= value <= INT_MAX else (None, "is out of range")
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, "must be a number"
        if isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
            return None, "is out of range"
        if isinstance(value, int) and float(value) != value:
            # Compared as a double on PostgreSQL, exactly on SQLite: 2**53 + 1 would equal 2**53
            # (filters, sorts, unique) on one backend only.
            return None, "is not exactly a double (beyond 2^53): use an integer field"
        return (value, None) if math.isfinite(value) else (None, "must be finite")
    if kind == "boolean":
        if isinstance(value, bool):
            return value, None
        if isinstance(value, int) and value in (0, 1):  # inputs accept 1/0 (spec 003 §2.4.1)
            return bool(value), None
        return None, "must be a boolean"
    if kind == "datetime":
        text = normalise_datetime(value)
        return (text, None) if text else (None, "must be an ISO 8601 date-time")
    expected = dict if kind == "object" else list
    if not isinstance(value, expected):
        return None, f"must be an {kind}" if kind == "object" else "must be an array"
    problem, odd = _document_problem(value, MAX_NESTING)
    if problem:
        return None, problem
    return (_stored_document(value) if odd else value), None


def validate_record(
    schema: CollectionSchema, data: Mapping[str, Any], *, partial: bool = False
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Check `data` against the fields; returns (clean data, field errors).

    Unknown fields are refused, types are strict, datetimes normalised. `null` means "no value":
    it is dropped (an error for a required field). With `partial` (a patch) absent fields are not
    checked for `required` and defaults are not applied; the merged result is checked later.
    """
    errors: list[dict[str, str]] = []
    clean: dict[str, Any] = {}
    for name, value in data.items():
        f = schema.field(name)
        if f is None:
            errors.append({"field": name, "message": "is not a field of this collection"})
            continue
        if value is None:
            if f.required and (partial or f.default is None):
                errors.append({"field": name, "message": "is required"})
            elif partial:
                clean[name] = None  # a patch clears the field
            continue
        stored, problem = coerce_value(f, value)
        if problem:
            errors.append({"field": name, "message": problem})
        else:
            clean[name] = stored
    if not partial:
        for f in schema.fields:
            if f.name in clean:
                continue
            if f.default is not None:
                clean[f.name] = coerce_value(f, f.default)[0]
            elif f.required and f.name not in data:  # an explicit null was reported above
                errors.append({"field": f.name, "message": "is required"})
    return clean, errors
