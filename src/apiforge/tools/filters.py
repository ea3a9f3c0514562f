"""Collection filter trees (DESIGN.md §5) compiled to parameterised SQLAlchemy Core conditions.

A tree is a JSON object: `{"field": {"_op": value}}`; several fields (or several operators on one
field) in one object are AND-ed, and `{"_and": [...]}`, `{"_or": [...]}`, `{"_not": {...}}` nest.

    {"_and": [{"published": {"_eq": true}}, {"title": {"_contains": "50%"}}]}

The compiler never sees a table. The caller resolves each field name to a SQL expression (a real
column, `json_extract(data, '$.f')` on SQLite, `data ->> 'f'` on PostgreSQL) and each operand to
the value to bind (evaluating `{"expr": ...}`, coercing to the field's type), so one compiler
serves every storage layout. Every value is a bound parameter; SQL text is never built from input.

Comparisons follow SQL: a null field matches no comparison (not even `_neq`/`_nin`); `_null`
and `_nnull` test for it. A null operand is refused rather than compared, so an expression that
unexpectedly yields null (`token.sub` of an anonymous call) cannot turn into `IS NULL` and widen
a query. `_contains` and `_starts_with` are case-sensitive on every dialect and `_icontains`
compares `lower()` of both sides, folded letter by letter on both (`PG_FOLD_COLLATIONS`,
`sqlite_lower`): LIKE with `%` and `_` escaped, except on SQLite, whose LIKE ignores case and
refuses patterns past 50,000 bytes (a 500 for a long needle that PostgreSQL answers): there the
three are `instr` tests.

A field stored finer than it is shown (record times: microseconds, shown in whole seconds) is
resolved to a `Granular`; each of its values then stands for its whole granule, so a record
matches `{"createdTime": {"_eq": <its createdTime>}}` and not `_gt` of it. A column whose order
the database's collation decides is resolved to a `Collated`: ranges compare it in the order
wanted, equality on the column as it is (which its indexes serve).
"""

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    ColumnElement,
    ColumnExpressionArgument,
    String,
    and_,
    false,
    func,
    literal,
    not_,
    or_,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

MAX_DEPTH: Final = 8  # nested objects, the root counting as 1 (each _and/_or/_not adds one)
MAX_CONDITIONS: Final = 64  # field operators in the whole tree
MAX_LIST_ITEMS: Final = 500  # items of an _in/_nin list
FIELD_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

COMPARISONS: Final = frozenset({"_eq", "_neq", "_lt", "_lte", "_gt", "_gte"})
LIST_OPERATORS: Final = frozenset({"_in", "_nin"})
TEXT_OPERATORS: Final = frozenset({"_contains", "_icontains", "_starts_with"})
NULL_OPERATORS: Final = frozenset({"_null", "_nnull"})
FIELD_OPERATORS: Final = (
    COMPARISONS | LIST_OPERATORS | TEXT_OPERATORS | NULL_OPERATORS | {"_between"}
)
LOGICAL_OPERATORS: Final = frozenset({"_and", "_or", "_not"})

_LIKE_ESCAPE: Final = "/"  # not a backslash: no dialect treats "/" specially inside a literal

Path = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Granular:
    """A field whose stored values are finer than the values it is shown and compared as: a
    value `v` stands for the granule `[v, after(v))` (a whole second: `after` adds one), so
    `_eq` matches the granule, `_gt` starts after it and `_lte` takes all of it — what a client
    comparing the values it was shown expects. The bounds stay plain comparisons of the
    column, which its indexes serve."""

    expression: ColumnElement[Any]
    after: Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Collated:
    """A text column whose order depends on the database's collation but whose equality does
    not (a deterministic collation equals what the bytes equal): `_lt`, `_lte`, `_gt`, `_gte`
    and `_between` compare `ordered` (the column in the order wanted), everything else the
    plain `expression`, which the column's indexes serve."""

    expression: ColumnElement[Any]
    ordered: ColumnElement[Any]


FieldResolver = Callable[[str], ColumnElement[Any] | Granular | Collated]
"""`(field name) -> SQL expression` (or a `Granular` or `Collated` one); raises KeyError or
ValueError for a field that is not there."""
ValueResolver = Callable[[str, Any], Any]
"""`(field name, operand as written) -> value to bind`; raise ValueError when it cannot be bound."""


class FilterError(ValueError):
    """A filter tree is malformed or over a limit. `path` locates the offending node."""

    def __init__(self, message: str, path: Path = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    @property
    def dotted_path(self) -> str:
        """The path as `_and.1.title._eq` (empty for the root)."""
        return ".".join(str(part) for part in self.path)


def is_expression(value: Any) -> bool:
    """`{"expr": ...}` and nothing else: a value known only when a call runs."""
    return isinstance(value, Mapping) and len(value) == 1 and "expr" in value


def validate_filter(
    tree: Any,
    known_fields: Collection[str] | None = None,
    *,
    check_expression: Callable[[str], object] | None = None,
) -> set[str]:
    """Check a tree's shape, limits and field names without compiling it; return the fields used.

    Run when a step is saved. `{"expr": "<source>"}` is accepted wherever a value (or a whole
    `_in`/`_between` list) is expected; `check_expression(source)` may vet it, and a ValueError it
    raises becomes a FilterError at that operand. `known_fields=None` accepts any valid name."""
    checker = _Checker(known_fields, check_expression)
    checker.node(tree, (), 1)
    return checker.fields


def compile_filter(
    tree: Any,
    resolve_field: FieldResolver,
    resolve_value: ValueResolver | None = None,
) -> ColumnElement[bool]:
    """Compile a tree to one boolean SQL expression with every operand a bound parameter.

    `resolve_field` is called once per field occurrence, only with names that passed
    `FIELD_NAME`. `resolve_value` (identity when None) is called once per operand as written: each
    scalar, each item of a list written in the tree, or a whole non-list operand where a list is
    expected (e.g. `{"_in": {"expr": "args.ids"}}`), whose result must be a list and is bound item
    by item without being resolved again. Errors raised by either resolver as ValueError (or
    KeyError for fields) become FilterError with the path of the node."""
    _Checker(None, None).node(tree, (), 1)
    return _Builder(resolve_field, resolve_value).node(tree, ())


# --- structure ------------------------------------------------------------------------------


class _Checker:
    """One walk over a raw tree: shapes, limits and names; nothing is resolved or bound."""

    def __init__(
        self, known: Collection[str] | None, check_expression: Callable[[str], object] | None
    ) -> None:
        self.known = known
        self.check_expression = check_expression
        self.conditions = 0
        self.fields: set[str] = set()

    def node(self, tree: Any, path: Path, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise FilterError(f"filters nest deeper than {MAX_DEPTH} levels", path)
        if not isinstance(tree, Mapping):
            raise FilterError("expected a filter object", path)
        if not tree:
            raise FilterError("a filter object needs at least one condition", path)
        for key, value in tree.items():
            here = (*path, _key(key))
            if key in ("_and", "_or"):
                if not _is_list(value):
                    raise FilterError(f"{key} expects a list of filter objects", here)
                if not value:
                    raise FilterError(f"{key} needs at least one filter object", here)
                if len(value) > MAX_CONDITIONS:  # each item holds a condition: fail before walking
                    raise FilterError(f"more than {MAX_CONDITIONS} conditions", here)
                for index, item in enumerate(value):
                    self.node(item, (*here, index), depth + 1)
            elif key == "_not":
                self.node(value, here, depth + 1)
            elif key in FIELD_OPERATORS:
                raise FilterError(
                    f'{key} applies to a field: {{"<field>": {{"{key}": ...}}}}', here
                )
            elif isinstance(key, str) and key.startswith("_") and not isinstance(value, Mapping):
                raise FilterError(f"unknown operator {key!r}", here)
            else:
                self.field(key, value, here)

    def field(self, name: Any, ops: Any, path: Path) -> None:
        if not isinstance(name, str) or not FIELD_NAME.fullmatch(name):
            raise FilterError(
                "field names are a letter or _ then up to 63 letters, digits or _", path
            )
        if self.known is not None and name not in self.known:
            raise FilterError(f"unknown field {name!r}", path)
        if not isinstance(ops, Mapping) or not ops or is_expression(ops):
            raise FilterError('expected an operator object such as {"_eq": value}', path)
        self.fields.add(name)
        for op, operand in ops.items():
            here = (*path, _key(op))
            if op not in FIELD_OPERATORS:
                raise FilterError(f"unknown operator {op!r}", here)
            self.conditions += 1
            if self.conditions > MAX_CONDITIONS:
                raise FilterError(f"more than {MAX_CONDITIONS} conditions", here)
            self.operand(op, operand, here)

    def operand(self, op: str, operand: Any, path: Path) -> None:
        if op in NULL_OPERATORS:
            if not isinstance(operand, bool):
                raise FilterError(f"{op} expects true or false", path)
        elif is_expression(operand):
            self.expression(operand, path)
        elif op in LIST_OPERATORS or op == "_between":
            _check_list(op, operand, path)
            for index, item in enumerate(operand):
                self.scalar(op, item, (*path, index))
        else:
            self.scalar(op, operand, path)

    def scalar(self, op: str, value: Any, path: Path) -> None:
        if is_expression(value):
            self.expression(value, path)
            return
        _check_scalar(op, value, path)
        if not isinstance(value, str | int | float):  # bool is an int
            raise FilterError(f"{op} expects a string, number or boolean", path)

    def expression(self, value: Mapping[str, Any], path: Path) -> None:
        source = value["expr"]
        if not isinstance(source, str):
            raise FilterError("expr must be a string", path)
        if self.check_expression is not None:
            try:
                self.check_expression(source)
            except ValueError as exc:
                raise FilterError(str(exc), path) from exc


def _key(key: Any) -> str:
    return key if isinstance(key, str) else repr(key)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str | bytes | bytearray)


def _check_list(op: str, value: Any, path: Path) -> None:
    if op == "_between":
        if not _is_list(value) or len(value) != 2:
            raise FilterError("_between expects a list of two values [low, high]", path)
    elif not _is_list(value):
        raise FilterError(f"{op} expects a list of values", path)
    elif len(value) > MAX_LIST_ITEMS:
        raise FilterError(f"{op} lists hold at most {MAX_LIST_ITEMS} values", path)


def _check_scalar(op: str, value: Any, path: Path) -> None:
    """What any single operand must be, as written or as resolved."""
    if value is None:
        raise FilterError(f"{op} cannot compare with null; test for null with _null", path)
    if is_expression(value):
        raise FilterError("the expression was not resolved to a value", path)
    if isinstance(value, Mapping) or _is_list(value) or isinstance(value, set | frozenset):
        raise FilterError(f"{op} expects a single value", path)
    # Refused here rather than failing inside the driver: SQLite cannot bind an int beyond 64
    # bits and PostgreSQL refuses text holding NUL.
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError("numbers must be finite", path)
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise FilterError("integers must fit in 64 bits", path)
    if isinstance(value, str) and "\x00" in value:
        raise FilterError("text cannot contain NUL characters", path)
    if op in TEXT_OPERATORS and not isinstance(value, str):
        raise FilterError(f"{op} expects a string", path)


# --- SQL --------------------------------------------------------------------------------------


class _Builder:
    """The second walk, over a tree `_Checker` accepted: resolves operands and builds SQL."""

    def __init__(self, resolve_field: FieldResolver, resolve_value: ValueResolver | None) -> None:
        self.resolve_field = resolve_field
        self.resolve_value = resolve_value

    def node(self, tree: Mapping[str, Any], path: Path) -> ColumnElement[bool]:
        parts: list[ColumnElement[bool]] = []
        for key, value in tree.items():
            here = (*path, key)
            if key == "_and":
                parts.append(and_(*(self.node(v, (*here, i)) for i, v in enumerate(value))))
            elif key == "_or":
                parts.append(or_(*(self.node(v, (*here, i)) for i, v in enumerate(value))))
            elif key == "_not":
                parts.append(not_(self.node(value, here)))
            else:
                parts.append(self.field(key, value, here))
        return parts[0] if len(parts) == 1 else and_(*parts)

    def field(self, name: str, ops: Mapping[str, Any], path: Path) -> ColumnElement[bool]:
        try:
            column = self.resolve_field(name)
        except KeyError:
            raise FilterError(f"unknown field {name!r}", path) from None
        except ValueError as exc:
            raise FilterError(str(exc), path) from exc
        parts = [self.condition(column, name, op, v, (*path, op)) for op, v in ops.items()]
        return parts[0] if len(parts) == 1 else and_(*parts)

    def condition(
        self,
        field: ColumnElement[Any] | Granular | Collated,
        name: str,
        op: str,
        operand: Any,
        path: Path,
    ) -> ColumnElement[bool]:
        granular = field if isinstance(field, Granular) else None
        column = field.expression if isinstance(field, Granular | Collated) else field
        ordered = field.ordered if isinstance(field, Collated) else column
        if op in NULL_OPERATORS:
            wants_null = operand if op == "_null" else not operand
            return column.is_(None) if wants_null else column.is_not(None)
        if op in LIST_OPERATORS:
            values = self.values(name, op, operand, path)
            if granular is not None:
                return _granular_list(granular, op, values)
            if any(type(v) is int for v in values):
                # An integer field's list: a double `values` left as one has a fraction or lies
                # past 64 bits, so it equals no stored integer. Left in, it made PostgreSQL
                # compare the whole list, and the column, as doubles, rounding integers past
                # 2**53 (2**53 + 1 matched 2**53), where SQLite compares exactly.
                values = [v for v in values if not isinstance(v, float)]
            # A double is bound as a double: a list is bound in the column's type, and
            # PostgreSQL's driver truncates 1.5 bound as an integer to 1, which then matched.
            items = [literal(v) if isinstance(v, float) else v for v in values]
            return column.in_(items) if op == "_in" else column.not_in(items)
        if op == "_between":
            low, high = self.values(name, op, operand, path)
            if granular is not None:
                return and_(column >= low, column < granular.after(high))
            return ordered.between(low, high)
        value = self.value(name, op, operand, path)
        if op in COMPARISONS:
            if granular is not None:
                return _granular_compare(granular, op, value)
            return _compare(column if op in ("_eq", "_neq") else ordered, op, value)
        escaped = _escape_like(value)
        needle = literal(value, String)
        if op == "_contains":
            return _Contains(column, literal(f"%{escaped}%", String), needle)
        if op == "_starts_with":
            return _StartsWith(column, literal(f"{escaped}%", String), needle)
        return icontains(column, value)

    def values(self, name: str, op: str, operand: Any, path: Path) -> list[Any]:
        if _is_list(operand):
            return [self.value(name, op, item, (*path, i)) for i, item in enumerate(operand)]
        resolved = self.resolve(name, operand, path)
        _check_list(op, resolved, path)
        for index, item in enumerate(resolved):
            _check_scalar(op, item, (*path, index))
        return list(resolved)

    def value(self, name: str, op: str, operand: Any, path: Path) -> Any:
        resolved = self.resolve(name, operand, path)
        _check_scalar(op, resolved, path)
        return resolved

    def resolve(self, name: str, operand: Any, path: Path) -> Any:
        if self.resolve_value is None:
            return operand
        try:
            return self.resolve_value(name, operand)
        except ValueError as exc:
            raise FilterError(str(exc), path) from exc


def _compare(column: ColumnElement[Any], op: str, value: Any) -> ColumnElement[bool]:
    # Annotated locals: SQLAlchemy types rich comparisons on ColumnElement[Any] as Any.
    clause: ColumnElement[bool]
    if isinstance(value, bool) and op not in ("_eq", "_neq"):
        # SQLAlchemy takes a bare True/False only for =, != and IS; booleans order false < true.
        value = literal(value)
    if op == "_eq":
        clause = column == value
    elif op == "_neq":
        clause = column != value
    elif op == "_lt":
        clause = column < value
    elif op == "_lte":
        clause = column <= value
    elif op == "_gt":
        clause = column > value
    else:
        clause = column >= value
    return clause


def _granular_compare(field: Granular, op: str, value: Any) -> ColumnElement[bool]:
    """`op` against the granule `[value, after(value))` rather than its first point."""
    column: ColumnElement[Any] = field.expression
    clause: ColumnElement[bool]
    if op == "_eq":
        clause = and_(column >= value, column < field.after(value))
    elif op == "_neq":
        clause = or_(column < value, column >= field.after(value))
    elif op == "_lt":
        clause = column < value
    elif op == "_lte":
        clause = column < field.after(value)
    elif op == "_gt":
        clause = column >= field.after(value)
    else:
        clause = column >= value
    return clause


def _granular_list(field: Granular, op: str, values: list[Any]) -> ColumnElement[bool]:
    """`_in`: within one of the granules; `_nin`: within none (an empty list: no / every row,
    as `IN ()` and `NOT IN ()`)."""
    if op == "_in":
        matches = [_granular_compare(field, "_eq", value) for value in values]
        return or_(*matches) if matches else false()
    misses = [_granular_compare(field, "_neq", value) for value in values]
    return and_(*misses) if misses else true()


def _escape_like(value: str) -> str:
    """Make `%` and `_` (and the escape character itself) match literally in a LIKE pattern."""
    return (
        value.replace(_LIKE_ESCAPE, _LIKE_ESCAPE * 2)
        .replace("%", _LIKE_ESCAPE + "%")
        .replace("_", _LIKE_ESCAPE + "_")
    )


class _TextTest(FunctionElement[bool]):
    """`column LIKE pattern ESCAPE '/'`, with `needle` (the unescaped text) for SQLite.

    A construct of its own because SQLite's LIKE ignores case and refuses patterns longer than
    50,000 bytes: there the compile hook renders an `instr` test of the needle, elsewhere plain
    LIKE (which PostgreSQL indexes can serve)."""

    type = Boolean()
    inherit_cache = True


class _Contains(_TextTest):
    name = "contains_cs"
    inherit_cache = True


class _StartsWith(_TextTest):
    name = "starts_with_cs"
    inherit_cache = True


class _IContains(_TextTest):
    name = "contains_ci"
    inherit_cache = True


def _like_parts(element: _TextTest) -> tuple[ColumnElement[Any], ...]:
    column, pattern, needle = element.clauses.clauses
    return column, pattern, needle


@compiles(_Contains)
@compiles(_StartsWith)
@compiles(_IContains)
def _like_default(element: _TextTest, compiler: SQLCompiler, **kw: Any) -> str:
    column, pattern, _ = _like_parts(element)
    if isinstance(element, _IContains):
        column, pattern = func.lower(column), func.lower(pattern)
    return compiler.process(column.like(pattern, escape=_LIKE_ESCAPE).self_group(), **kw)


def icontains(column: ColumnExpressionArgument[Any], text: str) -> ColumnElement[bool]:
    """`column` contains `text`, ignoring case (Unicode folding on every backend); `%` and `_`
    in `text` match themselves. The `_icontains` filter, and every `?q=` search of the API."""
    pattern = literal(f"%{_escape_like(text)}%", String)
    return _IContains(column, pattern, literal(text, String))


# PostgreSQL folds case by the collation of lower()'s argument: "C" (which text fields sort by)
# folds ASCII only, and an ICU collation maps whole strings (a final sigma to "ς", "İ" to "i" and
# a combining dot). These collations fold letter by letter, as `sqlite_lower` does; each
# connection pool uses the first its database has (`core/db.py` sets the dialect's
# `PG_FOLD_ATTRIBUTE`), else the database's default collation.
PG_FOLD_COLLATIONS: Final = ("pg_c_utf8", "C.utf8", "C.UTF-8")
PG_FOLD_ATTRIBUTE: Final = "apiforge_fold_collation"


@compiles(_IContains, "postgresql")
def _like_postgresql(element: _TextTest, compiler: SQLCompiler, **kw: Any) -> str:
    column, pattern, _ = _like_parts(element)
    collation = getattr(compiler.dialect, PG_FOLD_ATTRIBUTE, "default")
    folded = func.lower(column.collate(collation))
    like = folded.like(func.lower(pattern.collate(collation)), escape=_LIKE_ESCAPE)
    return compiler.process(like.self_group(), **kw)


# SQLite's own lower() folds ASCII only ("ÉCOLE" would not contain "école"): connections that run
# filters register this function (`sqlite_lower`, core/db.py) to fold case as PostgreSQL does.
SQLITE_LOWER: Final = "apiforge_lower"


def sqlite_lower(value: Any) -> Any:
    """Unicode lower case for SQLite; anything but text passes through, as `lower()` does.

    Character by character, as PostgreSQL folds: Python's `str.lower` alone would also apply
    Unicode's special casing ("ΟΔΟΣ" -> "οδος" with a final sigma, "İ" -> "i" + a combining
    dot), and a search PostgreSQL answers would then find nothing on SQLite."""
    if not isinstance(value, str):
        return value
    if "Σ" not in value and "İ" not in value:  # the only two letters str.lower folds otherwise
        return value.lower()
    return "".join("i" if char == "İ" else char.lower() for char in value)


@compiles(_Contains, "sqlite")
@compiles(_StartsWith, "sqlite")
@compiles(_IContains, "sqlite")
def _like_sqlite(element: _TextTest, compiler: SQLCompiler, **kw: Any) -> str:
    column, _, needle = _like_parts(element)
    if isinstance(element, _IContains):
        fold = getattr(func, SQLITE_LOWER)
        column, needle = fold(column), fold(needle)
    position = func.instr(column, needle)
    exact = position == 1 if isinstance(element, _StartsWith) else position > 0
    return compiler.process(exact.self_group(), **kw)
