"""SQL over record documents: typed JSON-path expressions per dialect and the partial expression
indexes that back unique and indexed fields.

Records are JSON documents in one `records` table. A field is read as a typed SQL expression —
SQLite `json_extract(data, '$.f')`, PostgreSQL `CAST(data ->> 'f' AS <type>)` (text:
`(data ->> 'f') COLLATE "C"`, code point order like SQLite's) — and every unique or indexed field
gets an index on exactly that expression, restricted to its collection:

    CREATE INDEX ix_rec_<collection>_<hash> ON records ("partition", (<expr>), created_at, id)
        WHERE collection_id = '<collection>'

Both database planners use such an index only when the query repeats the expression *and* the
`collection_id = '<literal>'` predicate, so queries render the path and the collection id inline
(`literal_column`, `literal_execute`) instead of as bound parameters. Only values that the code
has checked (`is_name` identifiers, `is_id` ids) are ever rendered inline; every value a caller
supplies stays a bound parameter. The trailing `created_at, id` columns let "filter on a field,
newest first" walk the index in order and stop after one page.
"""

import dataclasses
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    Float,
    Integer,
    String,
    bindparam,
    cast,
    func,
    literal_column,
    select,
    text,
    type_coerce,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.db import TEXT_COLLATION
from apiforge.core.errors import ConflictError
from apiforge.datasets.models import Record
from apiforge.datasets.schema import CollectionSchema, FieldSchema, is_name, normalise_datetime
from apiforge.tools.ids import is_id

# Built-in attributes every record has, by the name callers use for them.
BUILTIN_TYPES = {
    "id": "string",
    "version": "integer",
    "createdTime": "datetime",
    "updatedTime": "datetime",
}
_BUILTIN_COLUMNS: dict[str, ColumnElement[Any]] = {
    "id": Record.id.expression,
    # A 32-bit column compared as 64 bits, as filters allow: PostgreSQL's driver would otherwise
    # refuse to bind a larger operand (`{"version": {"_lt": 2**40}}`) as an int4 parameter.
    "version": type_coerce(Record.version.expression, BigInteger),
    "createdTime": Record.created_at.expression,
    "updatedTime": Record.updated_at.expression,
}


def _checked(name: str) -> str:
    if not is_name(name):  # defence in depth: schemas are validated on save already
        raise ValueError(f"not a field name: {name!r}")
    return name


def field_expression(dialect: Dialect, f: FieldSchema) -> ColumnElement[Any]:
    """The typed value of field `f` in `records.data`, spelled the way its index spells it."""
    name = _checked(f.name)
    data: ColumnElement[Any] = literal_column("data")
    if dialect.name == "postgresql":
        raw: ColumnElement[Any] = data.op("->>")(literal_column(f"'{name}'"))
        if f.type == "integer":
            return cast(raw, BigInteger)
        if f.type == "number":
            return cast(raw, Float)
        if f.type == "boolean":
            return cast(raw, Boolean)
        # Text compares and sorts by code point, as SQLite's BINARY does, whatever the database's
        # collation ("en_US" puts "a" before "Z"); indexes spell the same, or go unused. Typed
        # plain String again so bound operands don't repeat the COLLATE: PostgreSQL refuses
        # `BETWEEN $1 COLLATE "C" AND ...`, and the explicit collation here decides anyway.
        return type_coerce(type_coerce(raw, String).collate(TEXT_COLLATION), String)
    raw = func.json_extract(data, literal_column(f"'$.{name}'"))
    kinds: dict[str, Any] = {"integer": Integer, "number": Float, "boolean": Boolean}
    return type_coerce(raw, kinds.get(f.type, String))


@dataclass(frozen=True, slots=True)
class Operand:
    """A filterable/sortable attribute: its SQL expression and its value type."""

    expression: ColumnElement[Any]
    type: str
    builtin: bool


def operand(dialect: Dialect, schema: CollectionSchema, name: str) -> Operand | None:
    """The attribute `name` of a record (a field or a built-in), or None when unknown."""
    if name in _BUILTIN_COLUMNS:
        return Operand(_BUILTIN_COLUMNS[name], BUILTIN_TYPES[name], True)
    f = schema.field(name)
    if f is None:
        return None
    return Operand(field_expression(dialect, f), f.type, False)


def bind_value(op: Operand, value: Any) -> Any:
    """A filter value in the form the column compares with; raises ValueError when it cannot be.

    Built-in times are real timestamp columns (datetime values); field datetimes are normalised
    ISO text, which orders correctly as text."""
    if value is None:
        return None
    kind = op.type
    if kind == "datetime":
        text_value = normalise_datetime(value)
        if text_value is None:
            raise ValueError("must be an ISO 8601 date-time")
        if op.builtin:
            return datetime.strptime(text_value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        return text_value
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ValueError("must be a boolean")
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError("must be a number")
        return float(value) if kind == "number" else _integer_operand(value)
    if kind == "string":
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value
    raise ValueError(f"{kind} fields can only be tested for null")


def _integer_operand(value: int | float) -> int | float:
    """A number compared with a 64-bit integer, so that both backends answer alike. PostgreSQL
    compares a bigint with a double as doubles, rounding integers past 2**53 (2**53 + 1 equals
    2.0**53), where SQLite compares exactly: a whole double is bound as the integer it is, and
    2.0**63 (the one double past the range that a rounded bigint reaches) as the next double up,
    which no integer reaches either. Any other double is past every bigint, or has a fraction
    and so lies within 2**52, where both backends compare exactly."""
    if isinstance(value, float) and value.is_integer():
        if -(2**63) <= value < 2**63:
            return int(value)
        if value == 2**63:
            return math.nextafter(value, math.inf)
    return value


def collection_predicate(collection_id: str) -> ColumnElement[bool]:
    """`collection_id = '<id>'` rendered inline, so partial indexes of the collection qualify."""
    if not is_id(collection_id):
        raise ValueError(f"not a collection id: {collection_id!r}")
    return Record.collection_id == bindparam(None, collection_id, String, literal_execute=True)


# --- indexes -------------------------------------------------------------------------------------


def _index_name(collection_id: str, f: FieldSchema) -> str:
    # Hashing (name, type, kind) keeps names short (PostgreSQL allows 63 bytes) and makes a type
    # or kind change a different index, so syncing drops the old one and builds the new one.
    digest = hashlib.sha256(f"{f.name}:{f.type}:{f.unique}".encode()).hexdigest()[:10]
    return f"{'ux' if f.unique else 'ix'}_rec_{collection_id}_{digest}"


def _index_ddl(dialect: Dialect, schema: CollectionSchema, f: FieldSchema) -> str:
    expression = str(
        field_expression(dialect, f).compile(
            dialect=dialect, compile_kwargs={"literal_binds": True}
        )
    )
    name = _index_name(schema.id, f)
    if f.unique:  # one value per workspace partition; absent values (NULL) never collide
        return (
            f'CREATE UNIQUE INDEX {name} ON records ("partition", ({expression})) '
            f"WHERE collection_id = '{schema.id}'"
        )
    return (
        f'CREATE INDEX {name} ON records ("partition", ({expression}), created_at, id) '
        f"WHERE collection_id = '{schema.id}'"
    )


def unique_field(schema: CollectionSchema, index: str | None) -> str | None:
    """The field whose unique index is `index`, or None. Also for a field this (possibly
    published, older) schema does not mark unique: the index follows the current definition."""
    if index is None:
        return None
    for f in schema.fields:
        if _index_name(schema.id, dataclasses.replace(f, unique=True)) == index:
            return f.name
    return None


def desired_indexes(dialect: Dialect, schema: CollectionSchema) -> dict[str, str]:
    """Index name -> DDL for every unique or indexed field of the collection."""
    if not is_id(schema.id):
        raise ValueError(f"not a collection id: {schema.id!r}")
    return {
        _index_name(schema.id, f): _index_ddl(dialect, schema, f)
        for f in schema.fields
        if f.unique or f.indexed
    }


async def existing_indexes(connection: AsyncConnection, collection_id: str) -> set[str]:
    return set(await _index_collations(connection, collection_id))


async def _index_collations(
    connection: AsyncConnection, collection_id: str
) -> dict[str, str | None]:
    """Name -> collation of the field column (the second) of each index of the collection: None
    where that column has none (numbers, booleans) and always on SQLite (text is bytes there)."""
    if not is_id(collection_id):
        raise ValueError(f"not a collection id: {collection_id!r}")
    patterns = {"a": f"ix\\_rec\\_{collection_id}\\_%", "b": f"ux\\_rec\\_{collection_id}\\_%"}
    if connection.dialect.name == "postgresql":
        query = text(
            "SELECT c.relname, co.collname FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_class t ON t.oid = i.indrelid "
            "LEFT JOIN pg_collation co ON co.oid = i.indcollation[1] "
            "WHERE t.relname = 'records' "
            "AND t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema()) "
            "AND (c.relname LIKE :a ESCAPE '\\' OR c.relname LIKE :b ESCAPE '\\')"
        )
    else:
        query = text(
            "SELECT name, NULL FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records' "
            "AND (name LIKE :a ESCAPE '\\' OR name LIKE :b ESCAPE '\\')"
        )
    rows = (await connection.execute(query, patterns)).all()
    return {str(name): None if collation is None else str(collation) for name, collation in rows}


async def sync_indexes(connection: AsyncConnection, schema: CollectionSchema) -> None:
    """Make the collection's indexes match its fields: drop the stale ones, build the new ones.

    A text-field index in another collation than the queries' is stale too, whatever its name:
    during a rolling upgrade a node still on the release before migration 0017 builds them in
    the database's collation, under the names this release expects, and no query could use them.

    A unique index over records that already hold the same value twice in one partition cannot
    be built: that is a 409 naming the field, and the caller's transaction rolls back. So is an
    index of a field whose type changes over a value of the old type (PostgreSQL casts each),
    which a write landed after the caller looked for values (`changed_values_error`)."""
    desired = desired_indexes(connection.dialect, schema)
    collations = await _index_collations(connection, schema.id)
    existing = set(collations)
    miscollated = {n for n, c in collations.items() if c not in (None, TEXT_COLLATION)}
    for name in sorted((existing - desired.keys()) | miscollated):
        await connection.execute(text(f"DROP INDEX {name}"))
    by_name = {_index_name(schema.id, f): f for f in schema.fields if f.unique or f.indexed}
    for name in sorted(desired.keys() - (existing - miscollated)):
        f = by_name[name]
        if f.unique:
            await _refuse_duplicates(connection, schema, f)
        try:
            await connection.execute(text(desired[name]))
        except IntegrityError as exc:  # a write raced the duplicate check
            raise _duplicates_error(f) from exc
        except DBAPIError as exc:
            if not str(getattr(exc.orig, "sqlstate", "")).startswith("22"):  # a data exception
                raise
            raise changed_values_error([f.name]) from exc


async def drop_indexes(connection: AsyncConnection, collection_id: str) -> int:
    """Drop every index of a collection (before the collection itself is deleted); how many."""
    names = sorted(await existing_indexes(connection, collection_id))
    for name in names:
        await connection.execute(text(f"DROP INDEX {name}"))
    return len(names)


async def _refuse_duplicates(
    connection: AsyncConnection, schema: CollectionSchema, f: FieldSchema
) -> None:
    expression = field_expression(connection.dialect, f)
    stmt = (
        select(func.count())
        .where(collection_predicate(schema.id), expression.is_not(None))
        .group_by(Record.partition, expression)
        .having(func.count() > 1)
        .limit(1)
    )
    if (await connection.execute(stmt)).first() is not None:
        raise _duplicates_error(f)


def changed_values_error(names: Sequence[str]) -> ConflictError:
    """409 `field_has_values`: records hold values of fields whose type or encryption changes."""
    conflicts = [
        {
            "field": name,
            "message": "type or encryption cannot change: records hold values; remove the field "
            "first to erase them",
        }
        for name in names
    ]
    return ConflictError(
        "Records hold values of a changed field",
        reason="field_has_values",
        details={"errors": conflicts},
    )


def _duplicates_error(f: FieldSchema) -> ConflictError:
    return ConflictError(
        f"Field '{f.name}' cannot become unique: records already share a value",
        reason="duplicate_values",
        details={"errors": [{"field": f.name, "message": "existing records share a value"}]},
    )
