"""Filter trees compiled against a real SQLite table: each operator's rows, escaping, errors."""

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ColumnElement,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    select,
    type_coerce,
)

from apiforge.core.db import sqlite_functions
from apiforge.tools.filters import (
    FIELD_OPERATORS,
    LOGICAL_OPERATORS,
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_LIST_ITEMS,
    FilterError,
    compile_filter,
    is_expression,
    validate_filter,
)

metadata = MetaData()
posts = Table(
    "posts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("title", String),
    Column("views", Integer),
    Column("score", Float),
    Column("published", Boolean),
    Column("data", JSON),
)


def sqlite_engine() -> Engine:
    """In-memory SQLite with the functions compiled filters call, as the server's connections."""
    engine = create_engine("sqlite://")
    event.listen(engine, "connect", lambda connection, _record: sqlite_functions(connection))
    return engine


TITLES = {
    1: "Hello world",
    2: "hello there",
    3: "50% off_sale",
    4: "x' OR 1=1 --",
    5: None,
    6: "a/b_c",
    7: "HELLO",
}
VIEWS = {1: 10, 2: 20, 3: 30, 4: 0, 5: None, 6: 5, 7: 10}
SCORES = {1: 1.5, 2: 2.5, 3: None, 4: 0.0, 5: 9.0, 6: 1.5, 7: 3.0}
PUBLISHED = {1: True, 2: False, 3: True, 4: False, 5: None, 6: True, 7: True}
ALL = sorted(TITLES)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    engine = sqlite_engine()
    metadata.create_all(engine)
    rows = [
        {
            "id": i,
            "title": TITLES[i],
            "views": VIEWS[i],
            "score": SCORES[i],
            "published": PUBLISHED[i],
            "data": {"title": TITLES[i], "views": VIEWS[i]},
        }
        for i in ALL
    ]
    with engine.begin() as connection:
        connection.execute(posts.insert(), rows)
    yield engine
    engine.dispose()


def column(name: str) -> ColumnElement[Any]:
    if name in ("id", "data"):
        raise KeyError(name)
    return posts.c[name]


def json_field(name: str) -> ColumnElement[Any]:
    """The way a caller reads a field of a JSON document on SQLite."""
    kinds: dict[str, Any] = {"views": Integer, "title": String}
    return type_coerce(func.json_extract(posts.c.data, f"$.{name}"), kinds[name])


def ids(engine: Engine, tree: Any, **kwargs: Any) -> list[int]:
    condition = compile_filter(tree, kwargs.pop("resolve_field", column), **kwargs)
    with engine.connect() as connection:
        query = select(posts.c.id).where(condition).order_by(posts.c.id)
        return list(connection.execute(query).scalars())


# --- operators ----------------------------------------------------------------------------


def test_icontains_folds_case_beyond_ascii_as_postgresql_does() -> None:
    # SQLite's own lower() folds ASCII only: "ÉCOLE" would not contain "école" there.
    engine = sqlite_engine()
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            posts.insert(), [{"id": 1, "title": "ÉCOLE Ünïcode"}, {"id": 2, "title": "ecole"}]
        )
    assert ids(engine, {"title": {"_icontains": "école ünï"}}) == [1]
    assert ids(engine, {"title": {"_icontains": "ÜNÏCODE"}}) == [1]
    assert ids(engine, {"title": {"_icontains": "ECOLE"}}) == [2]
    assert ids(engine, {"title": {"_contains": "école"}}) == []
    engine.dispose()


@pytest.mark.parametrize(
    ("tree", "expected"),
    [
        ({"views": {"_eq": 10}}, [1, 7]),
        ({"views": {"_neq": 10}}, [2, 3, 4, 6]),  # null matches no comparison
        ({"views": {"_lt": 10}}, [4, 6]),
        ({"views": {"_lte": 10}}, [1, 4, 6, 7]),
        ({"views": {"_gt": 10}}, [2, 3]),
        ({"views": {"_gte": 20}}, [2, 3]),
        ({"score": {"_gt": 1.5}}, [2, 5, 7]),
        ({"published": {"_eq": True}}, [1, 3, 6, 7]),
        ({"published": {"_eq": False}}, [2, 4]),
        ({"title": {"_eq": "HELLO"}}, [7]),
        ({"views": {"_in": [0, 30, 99]}}, [3, 4]),
        ({"views": {"_in": []}}, []),
        ({"views": {"_nin": [10, 20]}}, [3, 4, 6]),
        ({"views": {"_null": True}}, [5]),
        ({"views": {"_null": False}}, [1, 2, 3, 4, 6, 7]),
        ({"views": {"_nnull": True}}, [1, 2, 3, 4, 6, 7]),
        ({"views": {"_nnull": False}}, [5]),
        ({"views": {"_between": [5, 20]}}, [1, 2, 6, 7]),
        ({"title": {"_contains": "ello"}}, [1, 2]),
        ({"title": {"_icontains": "ELLO"}}, [1, 2, 7]),
        ({"title": {"_starts_with": "Hello"}}, [1]),
        ({"title": {"_starts_with": "hello"}}, [2]),
        ({"title": {"_gte": "a", "_lt": "i"}}, [6, 2]),
    ],
)
def test_each_operator_returns_its_rows(engine: Engine, tree: Any, expected: list[int]) -> None:
    assert ids(engine, tree) == sorted(expected)


def test_contains_and_starts_with_are_case_sensitive_even_on_sqlite(engine: Engine) -> None:
    assert ids(engine, {"title": {"_contains": "HELLO"}}) == [7]
    assert ids(engine, {"title": {"_starts_with": "HEL"}}) == [7]
    assert ids(engine, {"title": {"_contains": "World"}}) == []


def test_fields_in_one_object_are_and_ed(engine: Engine) -> None:
    assert ids(engine, {"views": {"_eq": 10}, "title": {"_contains": "world"}}) == [1]


def test_and_or_not_nest(engine: Engine) -> None:
    tree = {
        "_or": [
            {"_and": [{"published": {"_eq": True}}, {"views": {"_gte": 10}}]},
            {"title": {"_contains": "there"}},
        ]
    }
    assert ids(engine, tree) == [1, 2, 3, 7]
    assert ids(engine, {"_not": {"views": {"_eq": 10}}}) == [2, 3, 4, 6]
    assert ids(engine, {"_not": {"title": {"_contains": "ello"}}}) == [3, 4, 6, 7]


def test_depth_and_condition_limits_are_inclusive(engine: Engine) -> None:
    tree: dict[str, Any] = {"views": {"_eq": 10}}
    for _ in range(MAX_DEPTH - 1):
        tree = {"_and": [tree]}
    assert ids(engine, tree) == [1, 7]
    many = {"_or": [{"views": {"_eq": n}} for n in range(MAX_CONDITIONS)]}
    assert ids(engine, many) == [1, 2, 3, 4, 6, 7]
    assert ids(engine, {"views": {"_in": list(range(MAX_LIST_ITEMS))}}) == [1, 2, 3, 4, 6, 7]


def test_json_path_fields_compile_through_the_callers_resolver(engine: Engine) -> None:
    tree = {"_and": [{"views": {"_gte": 10}}, {"title": {"_contains": "ello"}}]}
    assert ids(engine, tree, resolve_field=json_field) == [1, 2]
    assert ids(engine, {"title": {"_null": True}}, resolve_field=json_field) == [5]


# --- values are data --------------------------------------------------------------------


@pytest.mark.parametrize("op", ["_eq", "_contains", "_icontains", "_starts_with"])
def test_injection_looking_values_are_bound_as_data(engine: Engine, op: str) -> None:
    value = "x' OR 1=1 --"
    assert ids(engine, {"title": {op: value}}) == [4]
    sql = str(compile_filter({"title": {op: value}}, column).compile())
    assert "1=1" not in sql


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("_contains", "%", [3]),
        ("_contains", "_", [3, 6]),
        ("_contains", "/", [6]),
        ("_contains", "b_c", [6]),
        ("_icontains", "%", [3]),
        ("_icontains", "_S", [3]),
        ("_starts_with", "50%", [3]),
        ("_starts_with", "_", []),
        ("_starts_with", "%", []),
        ("_starts_with", "a/", [6]),
    ],
)
def test_like_wildcards_in_values_match_literally(
    engine: Engine, op: str, value: str, expected: list[int]
) -> None:
    assert ids(engine, {"title": {op: value}}) == expected


def test_every_operand_is_a_bound_parameter() -> None:
    tree = {"_or": [{"title": {"_eq": "secret-a"}}, {"views": {"_in": [31337]}}]}
    compiled = compile_filter(tree, column).compile()
    assert "secret-a" not in str(compiled)
    assert "31337" not in str(compiled)
    assert "secret-a" in compiled.params.values()


# --- value resolver ---------------------------------------------------------------------


def test_value_resolver_sees_every_operand_with_its_field(engine: Engine) -> None:
    variables = {"who": "hello there", "low": 5}
    seen: list[tuple[str, Any]] = []

    def resolve(field: str, value: Any) -> Any:
        seen.append((field, value))
        return variables[value["expr"]] if is_expression(value) else value

    tree = {
        "title": {"_eq": {"expr": "who"}},
        "views": {"_between": [{"expr": "low"}, 20], "_in": [20, 30]},
    }
    assert ids(engine, tree, resolve_value=resolve) == [2]
    assert seen == [
        ("title", {"expr": "who"}),
        ("views", {"expr": "low"}),
        ("views", 20),
        ("views", 20),
        ("views", 30),
    ]


def test_a_whole_list_operand_is_resolved_once_and_its_items_never_again(
    engine: Engine,
) -> None:
    calls: list[Any] = []

    def resolve(field: str, value: Any) -> Any:
        calls.append(value)
        # A list from the call's data may hold things that look like expressions: data.
        return [10, {"expr": "evil"}] if is_expression(value) else value

    with pytest.raises(FilterError) as caught:
        ids(engine, {"views": {"_in": {"expr": "ids"}}}, resolve_value=resolve)
    assert caught.value.path == ("views", "_in", 1)
    assert calls == [{"expr": "ids"}]
    resolved = ids(engine, {"views": {"_in": {"expr": "x"}}}, resolve_value=lambda f, v: [0, 30])
    assert resolved == [3, 4]


@pytest.mark.parametrize(
    ("resolved", "message"),
    [
        (None, "cannot compare with null"),
        ([1], "expects a single value"),
        ({"a": 1}, "expects a single value"),
        (float("nan"), "finite"),
    ],
)
def test_resolved_values_are_checked_too(engine: Engine, resolved: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message) as caught:
        ids(engine, {"views": {"_eq": {"expr": "x"}}}, resolve_value=lambda f, v: resolved)
    assert caught.value.path == ("views", "_eq")


def test_resolver_value_errors_carry_the_operand_path(engine: Engine) -> None:
    def resolve(field: str, value: Any) -> Any:
        raise ValueError("must be a number")

    with pytest.raises(FilterError, match="must be a number") as caught:
        ids(engine, {"_or": [{"views": {"_in": [1, 2]}}]}, resolve_value=resolve)
    assert caught.value.path == ("_or", 0, "views", "_in", 0)
    assert caught.value.dotted_path == "_or.0.views._in.0"


def test_unresolved_expressions_are_refused_without_a_resolver(engine: Engine) -> None:
    with pytest.raises(FilterError, match="not resolved"):
        ids(engine, {"views": {"_eq": {"expr": "args.n"}}})


def test_unknown_fields_from_the_field_resolver_become_filter_errors(engine: Engine) -> None:
    with pytest.raises(FilterError, match="unknown field 'data'") as caught:
        ids(engine, {"_and": [{"views": {"_eq": 1}}, {"data": {"_eq": 1}}]})
    assert caught.value.path == ("_and", 1, "data")


# --- errors ---------------------------------------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    tree: dict[str, Any] = {"views": {"_eq": 1}}
    for _ in range(depth - 1):
        tree = {"_not": tree}
    return tree


ERRORS: list[tuple[Any, tuple[str | int, ...], str]] = [
    ({"_and": [{"views": {"_eq": 1}}, {"title": {"_like": "x"}}]}, ("_and", 1, "title", "_like"),
     "unknown operator"),
    ({"_xor": [{"views": {"_eq": 1}}]}, ("_xor",), "unknown operator"),
    ({"_eq": 1}, ("_eq",), "applies to a field"),
    ({"views": {"_in": 3}}, ("views", "_in"), "expects a list"),
    ({"views": {"_nin": "abc"}}, ("views", "_nin"), "expects a list"),
    ({"views": {"_between": [1]}}, ("views", "_between"), "two values"),
    ({"views": {"_between": [1, 2, 3]}}, ("views", "_between"), "two values"),
    ({"views": {"_between": 1}}, ("views", "_between"), "two values"),
    ({"views": {"_null": "yes"}}, ("views", "_null"), "true or false"),
    ({"views": {"_nnull": 1}}, ("views", "_nnull"), "true or false"),
    ({"views": {"_null": {"expr": "true"}}}, ("views", "_null"), "true or false"),
    ({"views": {"_eq": None}}, ("views", "_eq"), "test for null with _null"),
    ({"views": {"_eq": [1]}}, ("views", "_eq"), "single value"),
    ({"views": {"_eq": {"a": 1}}}, ("views", "_eq"), "single value"),
    ({"views": {"_in": [1, None]}}, ("views", "_in", 1), "null"),
    ({"views": {"_in": [1, [2]]}}, ("views", "_in", 1), "single value"),
    ({"title": {"_contains": 5}}, ("title", "_contains"), "expects a string"),
    ({"score": {"_gt": float("inf")}}, ("score", "_gt"), "finite"),
    ({"views": {"_eq": 2**63}}, ("views", "_eq"), "64 bits"),
    ({"title": {"_eq": "a\x00b"}}, ("title", "_eq"), "NUL"),
    ({"views": {"_eq": {"expr": 1}}}, ("views", "_eq"), "expr must be a string"),
    ({"_and": []}, ("_and",), "at least one"),
    ({"_or": []}, ("_or",), "at least one"),
    ({"_and": {"views": {"_eq": 1}}}, ("_and",), "list of filter objects"),
    ({"_or": [{"views": {"_eq": 1}}, 3]}, ("_or", 1), "expected a filter object"),
    ({"_or": [{}]}, ("_or", 0), "at least one condition"),
    ({}, (), "at least one condition"),
    ([{"views": {"_eq": 1}}], (), "expected a filter object"),
    ("views = 1", (), "expected a filter object"),
    ({"views": 1}, ("views",), "operator object"),
    ({"views": {}}, ("views",), "operator object"),
    ({"views": {"expr": "args.x"}}, ("views",), "operator object"),
    ({"1views": {"_eq": 1}}, ("1views",), "field names"),
    ({"a-b": {"_eq": 1}}, ("a-b",), "field names"),
    ({"x" * 65: {"_eq": 1}}, ("x" * 65,), "field names"),
    ({"views; DROP TABLE posts": {"_eq": 1}}, ("views; DROP TABLE posts",), "field names"),
    ({"": {"_eq": 1}}, ("",), "field names"),
    ({7: {"_eq": 1}}, ("7",), "field names"),
    (_nested(MAX_DEPTH + 1), ("_not",) * MAX_DEPTH, "deeper than 8"),
    ({"_or": [{"views": {"_eq": n}} for n in range(MAX_CONDITIONS + 1)]}, ("_or",),
     "more than 64 conditions"),
    ({"views": {"_eq": 1, "_neq": 2}, "_and": [{"views": {"_gt": n}} for n in range(63)]},
     ("_and", 62, "views", "_gt"), "more than 64 conditions"),
    ({"views": {"_in": list(range(MAX_LIST_ITEMS + 1))}}, ("views", "_in"), "at most 500"),
]  # fmt: skip


@pytest.mark.parametrize(("tree", "path", "message"), ERRORS)
def test_invalid_trees_raise_filter_error_with_the_path(
    tree: Any, path: tuple[str | int, ...], message: str
) -> None:
    with pytest.raises(FilterError, match=message) as caught:
        compile_filter(tree, column)
    assert caught.value.path == path
    with pytest.raises(FilterError, match=message) as again:
        validate_filter(tree)
    assert again.value.path == path


def test_filter_error_is_a_value_error_with_a_dotted_path() -> None:
    with pytest.raises(ValueError, match="unknown operator") as caught:
        validate_filter({"_and": [{"views": {"_eq": 1}}, {"title": {"_eqq": 1}}]})
    assert isinstance(caught.value, FilterError)
    assert caught.value.dotted_path == "_and.1.title._eqq"
    assert str(caught.value) == "unknown operator '_eqq'"


# --- validate_filter -----------------------------------------------------------------------


def test_validate_returns_the_fields_a_tree_reads() -> None:
    tree = {
        "_or": [{"title": {"_contains": "a"}}, {"_not": {"views": {"_in": {"expr": "args.v"}}}}],
        "published": {"_eq": True},
    }
    assert validate_filter(tree) == {"title", "views", "published"}
    assert validate_filter(tree, {"title", "views", "published", "other"}) == {
        "title",
        "views",
        "published",
    }


def test_validate_checks_field_names_against_the_known_ones() -> None:
    with pytest.raises(FilterError, match="unknown field 'views'") as caught:
        validate_filter({"_or": [{"title": {"_eq": "a"}}, {"views": {"_eq": 1}}]}, {"title": 1})
    assert caught.value.path == ("_or", 1, "views")


def test_validate_accepts_expressions_where_values_are_expected() -> None:
    tree = {
        "title": {"_eq": {"expr": "token.sub"}, "_contains": {"expr": "args.q"}},
        "views": {"_in": {"expr": "args.ids"}, "_between": [{"expr": "args.lo"}, 10]},
    }
    assert validate_filter(tree) == {"title", "views"}


def test_validate_hands_each_expression_to_the_checker() -> None:
    seen: list[str] = []

    def check(source: str) -> None:
        seen.append(source)
        if "bad" in source:
            raise ValueError("syntax error at 1:3")

    tree = {"views": {"_in": [1, {"expr": "args.a"}]}, "title": {"_eq": {"expr": "args.b"}}}
    validate_filter(tree, check_expression=check)
    assert seen == ["args.a", "args.b"]
    with pytest.raises(FilterError, match="syntax error at 1:3") as caught:
        validate_filter({"_or": [{"title": {"_eq": {"expr": "bad"}}}]}, check_expression=check)
    assert caught.value.path == ("_or", 0, "title", "_eq")


# --- properties -----------------------------------------------------------------------------

TEXT = st.text(alphabet="aAlLo%_/' ", max_size=3)
ORDER = ["_eq", "_neq", "_lt", "_lte", "_gt", "_gte"]
SMALL = st.integers(0, 31)
CONDITIONS = st.one_of(
    st.tuples(st.just("title"), st.sampled_from(ORDER), TEXT),
    st.tuples(st.just("title"), st.sampled_from(["_contains", "_icontains", "_starts_with"]), TEXT),
    st.tuples(st.just("views"), st.sampled_from(ORDER), st.integers(-1, 31)),
    st.tuples(
        st.sampled_from(["title", "views"]), st.sampled_from(["_null", "_nnull"]), st.booleans()
    ),
    st.tuples(st.just("views"), st.sampled_from(["_in", "_nin"]), st.lists(SMALL, max_size=4)),
    st.tuples(st.just("views"), st.just("_between"), st.lists(SMALL, min_size=2, max_size=2)),
).map(lambda c: {c[0]: {c[1]: c[2]}})
TREES = st.recursive(
    CONDITIONS,
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"_and": items}),
        st.lists(children, min_size=1, max_size=3).map(lambda items: {"_or": items}),
        children.map(lambda child: {"_not": child}),
        st.tuples(CONDITIONS, children).map(lambda pair: {**pair[1], **pair[0]}),
    ),
    max_leaves=12,
)


def _depth(tree: dict[str, Any]) -> int:
    inner = [1]
    for key, value in tree.items():
        if key in ("_and", "_or"):
            inner.extend(1 + _depth(item) for item in value)
        elif key == "_not":
            inner.append(1 + _depth(value))
    return max(inner)


def _conditions(tree: dict[str, Any]) -> int:
    count = 0
    for key, value in tree.items():
        if key in ("_and", "_or"):
            count += sum(_conditions(item) for item in value)
        elif key == "_not":
            count += _conditions(value)
        else:
            count += len(value)
    return count


def _holds(tree: dict[str, Any], row: dict[str, Any]) -> bool | None:
    """SQL's three-valued logic in Python: the oracle the compiled SQL must agree with."""
    results: list[bool | None] = []
    for key, value in tree.items():
        if key == "_and":
            results.append(_all([_holds(item, row) for item in value]))
        elif key == "_or":
            results.append(_any([_holds(item, row) for item in value]))
        elif key == "_not":
            inner = _holds(value, row)
            results.append(None if inner is None else not inner)
        else:
            results.extend(_condition(row[key], op, operand) for op, operand in value.items())
    return _all(results)


def _all(values: list[bool | None]) -> bool | None:
    if False in values:
        return False
    return None if None in values else True


def _any(values: list[bool | None]) -> bool | None:
    if True in values:
        return True
    return None if None in values else False


def _condition(actual: Any, op: str, operand: Any) -> bool | None:
    if op in ("_null", "_nnull"):
        return (actual is None) == (operand if op == "_null" else not operand)
    if op in ("_in", "_nin") and not operand:
        return op == "_nin"  # an empty set: nothing is in it, null included
    if actual is None:
        return None
    if op in ("_eq", "_neq", "_lt", "_lte", "_gt", "_gte"):
        return _compare(actual, op, operand)
    if op in ("_in", "_nin"):
        return (actual in operand) == (op == "_in")
    if op == "_between":
        return bool(operand[0] <= actual <= operand[1])
    if op == "_contains":
        return operand in actual
    if op == "_icontains":
        return operand.lower() in actual.lower()
    return bool(actual.startswith(operand))


def _compare(actual: Any, op: str, operand: Any) -> bool:
    if op == "_eq":
        return bool(actual == operand)
    if op == "_neq":
        return bool(actual != operand)
    if op == "_lt":
        return bool(actual < operand)
    if op == "_lte":
        return bool(actual <= operand)
    if op == "_gt":
        return bool(actual > operand)
    return bool(actual >= operand)


PROPERTY_ROWS = {
    1: ("a%", 0),
    2: ("A_l", 5),
    3: ("lo'", 31),
    4: (None, 10),
    5: ("/o", None),
    6: ("", 20),
    7: ("al/%", 7),
    8: ("LO", 3),
    9: ("Al", 12),
}


@pytest.fixture(scope="module")
def property_engine() -> Iterator[Engine]:
    engine = sqlite_engine()
    metadata.create_all(engine)
    rows = [{"id": i, "title": t, "views": v} for i, (t, v) in PROPERTY_ROWS.items()]
    with engine.begin() as connection:
        connection.execute(posts.insert(), rows)
    yield engine
    engine.dispose()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(tree=TREES)
def test_random_valid_trees_select_what_sql_logic_says(
    property_engine: Engine, tree: dict[str, Any]
) -> None:
    assume(_depth(tree) <= MAX_DEPTH and _conditions(tree) <= MAX_CONDITIONS)
    fields = validate_filter(tree)
    assert fields <= {"title", "views"}
    expected = [
        i
        for i, (title, views) in PROPERTY_ROWS.items()
        if _holds(tree, {"title": title, "views": views}) is True
    ]
    assert ids(property_engine, tree) == expected


KEYS = st.one_of(
    st.sampled_from(sorted(FIELD_OPERATORS | LOGICAL_OPERATORS | {"title", "views", "expr"})),
    st.text(max_size=4),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=3),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(tree=JSON_VALUES)
def test_random_input_compiles_or_raises_filter_error_only(
    property_engine: Engine, tree: Any
) -> None:
    with contextlib.suppress(FilterError):
        validate_filter(tree)
    try:
        condition = compile_filter(tree, column)
    except FilterError:
        return
    with property_engine.connect() as connection:
        connection.execute(select(posts.c.id).where(condition)).all()


def test_range_operators_take_booleans(property_engine: Engine) -> None:
    """SQLAlchemy refuses `column > False` unless the boolean is a bound value (found by the
    property test above)."""
    for op in ("_lt", "_lte", "_gt", "_gte"):
        condition = compile_filter({"title": {op: False}}, column)
        with property_engine.connect() as connection:
            connection.execute(select(posts.c.id).where(condition)).all()
