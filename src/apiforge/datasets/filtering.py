"""Filter trees over records -> SQL, through `tools.filters` with this package's typed operands.

`tools.filters` owns the tree grammar (`_eq`, `_and`, ...) and binds every value as a parameter;
this module tells it what a name means in a record (a typed JSON-path expression or a built-in
column, `datasets.sql.operand`) and what a value must look like to compare with it. Encrypted
fields are refused (their stored values are ciphertexts); objects and arrays only test for null.
"""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, String, type_coerce
from sqlalchemy.engine import Dialect

from apiforge.core.db import TEXT_COLLATION
from apiforge.datasets.schema import CollectionSchema
from apiforge.datasets.sql import Operand, bind_value, operand
from apiforge.tools.filters import Collated, FilterError, Granular, compile_filter


class FilterValueError(ValueError):
    """A filter that does not fit the collection; `field` is the path of the offending node."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _next_second(value: datetime) -> datetime:
    """The end of `value`'s second; the calendar's last second ends at its last microsecond."""
    try:
        return value + timedelta(seconds=1)
    except OverflowError:
        return value.replace(microsecond=999_999)


def record_filter(
    dialect: Dialect, schema: CollectionSchema, tree: Any, field: str = "filter"
) -> ColumnElement[bool]:
    """The SQL condition of a (fully resolved) filter tree over `schema`'s records.

    Raises FilterValueError naming `<field>.<path in the tree>` for an unknown or encrypted
    field, a malformed tree, or a value of the wrong type."""
    operands: dict[str, Operand] = {}

    def resolve_field(name: str) -> ColumnElement[Any] | Granular | Collated:
        f = schema.field(name)
        if f is not None and not f.filterable:
            raise ValueError(f"{name!r} is encrypted and cannot be filtered on")
        found = operand(dialect, schema, name)
        if found is None:
            raise KeyError(name)
        operands[name] = found
        if found.builtin and found.type == "datetime":
            # Stored to the microsecond, shown and bound in whole seconds (`bind_value`).
            return Granular(found.expression, _next_second)
        if found.builtin and found.type == "string" and dialect.name == "postgresql":
            # `id` is a column in the database's collation ("Z" > "a" in en-US): its order is
            # compared in code point order, as text fields' and SQLite's; its equality stays on
            # the column, which the primary key serves.
            ordered = type_coerce(found.expression.collate(TEXT_COLLATION), String)
            return Collated(found.expression, ordered)
        return found.expression

    def resolve_value(name: str, value: Any) -> Any:
        found = operands.get(name) or operand(dialect, schema, name)
        if found is None:  # resolve_field ran first and refused it
            raise ValueError(f"unknown field {name!r}")
        if isinstance(value, list):  # a whole `_in` list produced by an expression
            return [bind_value(found, item) for item in value]
        return bind_value(found, value)

    try:
        return compile_filter(tree, resolve_field, resolve_value)
    except FilterError as exc:
        where = f"{field}.{exc.dotted_path}" if exc.dotted_path else field
        raise FilterValueError(f"{where}: {exc.message}", where) from None
