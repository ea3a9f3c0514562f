"""Differential property test of the record store: random records (text with case variants,
accents, `%`, `_`, backslashes and long runs; integers to ±2**63; doubles such as -0.0, 2.0**53,
5e-324; booleans; datetimes; JSON values; missing fields) in one collection, queried with random
filter trees, sorts and pages, answer as a small model of the documented semantics says
(docs/builder.md "Filters" and `getMany`; `tools/filters.py`) — and, when PostgreSQL is
configured, the same on PostgreSQL as on SQLite, record for record and byte for byte.

The model is written from the documents, not from the SQL:

- comparisons follow SQL: a record without a value matches no comparison, and `_and`, `_or` and
  `_not` are SQL's three-valued logic (`_not` of an unknown stays unknown, so it matches nothing);
- text compares by code point; `_icontains` folds case letter by letter ("ÉCOLE" contains
  "école", "ΟΔΟΣ" contains "οδοσ", "İ" folds to "i");
- `createdTime`/`updatedTime` compare as the whole seconds they are shown in (`Granular`);
- a number field's operand is a double (`datasets/sql.bind_value`); an integer field's is
  compared exactly, whatever its type (`_integer_operand`);
- sorts put a field's nulls last ascending and first descending, then break ties by
  `createdTime` and then `id`, in the first key's direction.

Each example writes its records through `RecordStore.insert`, then gives them chosen ids, times
and versions (so both databases hold the very same rows and ties are deliberate), and runs each
query through `get_many` and through `prepare_page` (the gateway's path).
"""

import functools
import math
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from hypothesis import HealthCheck, given, note
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.datasets.crypto import FieldCipher
from apiforge.datasets.filtering import FilterValueError, record_filter
from apiforge.datasets.models import Record
from apiforge.datasets.schema import INT_MAX, INT_MIN, CollectionSchema
from apiforge.datasets.store import RecordStore
from apiforge.gateway.signing import NONCE_FILE, MemoryNonceStore
from apiforge.migrate import upgrade
from apiforge.tools.filters import MAX_DEPTH
from tests.conftest import DATABASE_URL
from tests.factories import register
from tests.unit.datasets._support import Tenants, app_row

ID_PREFIX = "01jzzzzzzzzzzzzzzz"  # + 8 digits: ids ordered as chosen, the same on both sides
BASE_TIME = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
FIELDS: list[dict[str, Any]] = [
    {"name": "s", "type": "string", "indexed": True},
    {"name": "t", "type": "string"},
    {"name": "i", "type": "integer", "indexed": True},
    {"name": "n", "type": "number"},
    {"name": "b", "type": "boolean"},
    {"name": "d", "type": "datetime"},
    {"name": "o", "type": "object"},
    {"name": "a", "type": "array"},
    {"name": "k", "type": "integer"},  # the record's position in the example: never queried
]
TYPES = {f["name"]: f["type"] for f in FIELDS} | {
    "id": "id",
    "version": "integer",
    "createdTime": "time",
    "updatedTime": "time",
}
SORTABLE = ["s", "t", "i", "n", "b", "d", "id", "version", "createdTime", "updatedTime"]
COMPARISONS = ["_eq", "_neq", "_lt", "_lte", "_gt", "_gte"]

# --- values ---------------------------------------------------------------------------------

LETTERS = "aAbBzZ09 _%/\\'\"~éÉeÈ\u0301ßẞΣ\u03c3ςİ\u0131IiKk\u212a\u2126Ωωǅǆ😀ﬀ中\u00a0\t"
WORDS = [
    "",
    "a",
    "A",
    "%",
    "_",
    "\\",
    "/",
    "a%b",
    "a_b",
    "50%",
    "a/b_c",
    "ΟΔΟΣ",
    "οδοσ",
    "ÉCOLE",
    "école",
    "İstanbul",
    "istanbul",
    "STRASSE",
    "straße",
    "Zoe",
    "zoe",
]
STRINGS = st.one_of(
    st.sampled_from(WORDS),
    st.text(alphabet=LETTERS, max_size=8),
    st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=6),
)
LONG_STRINGS = st.builds(
    lambda unit, n: unit * n, st.sampled_from(["a", "é", "%", "aB"]), st.integers(25_000, 50_002)
)
EDGE_INTS = [0, 1, -1, 2**31, 2**53, 2**53 + 1, -(2**53) - 1, INT_MAX, INT_MIN, INT_MAX - 1]
INTS = st.one_of(st.integers(-3, 3), st.sampled_from(EDGE_INTS), st.integers(INT_MIN, INT_MAX))
EDGE_FLOATS = [0.0, -0.0, 0.5, -1.5, 1.0, 2.0**53, 1e16, 5e-324, 1.7976931348623157e308, 0.1]
FLOATS = st.one_of(
    st.sampled_from(EDGE_FLOATS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**53), 2**53),
)
DATETIMES = st.builds(
    lambda moment, style: _datetime_text(moment, style),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.sampled_from(["Z", "z", "+05:30", "", "-01:00"]),
)
# Inside object and array values -0.0 and whole doubles from 2**53 on are stored as 0.0 and as
# integers (`schema._stored_number`): PostgreSQL's JSONB would give some of them back so.
JSON_FLOATS = st.sampled_from(
    [0.0, -0.0, 0.5, -1.5, 2.0**53, 1e16, 5.678214014312166e16, 9.2e18, 1e19, 5e-324, -1e300]
) | st.floats(allow_nan=False, allow_infinity=False)
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(INT_MIN, INT_MAX) | JSON_FLOATS | STRINGS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(alphabet="abc", max_size=3), children, max_size=3)
    ),
    max_leaves=6,
)


def _datetime_text(moment: datetime, style: str) -> str:
    return moment.isoformat() + style


def _field_values(kind: str) -> st.SearchStrategy[Any]:
    return {
        "string": STRINGS,
        "integer": INTS,
        "number": FLOATS,
        "boolean": st.booleans(),
        "datetime": DATETIMES,
        "object": st.dictionaries(st.text(alphabet="xyz", max_size=2), JSON, max_size=3),
        "array": st.lists(JSON, max_size=3),
    }[kind]


@dataclass
class Row:
    data: dict[str, Any]
    id: str
    created: datetime
    updated: datetime
    version: int


@dataclass
class Query:
    tree: Any
    sort: list[str]
    page_no: int
    page_size: int


@dataclass
class Scenario:
    rows: list[Row]
    queries: list[Query]


def _variants(text: str) -> list[str]:
    folded = "".join("i" if char == "İ" else char.lower() for char in text)
    return [
        text,
        text.upper(),
        text.lower(),
        folded,
        text.swapcase(),
        text[:3],
        text[1:4],
        text[-2:],
    ]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    count = draw(st.integers(0, 10) | st.integers(4, 10))
    long_at = draw(st.sampled_from([None, None, None, *range(count)]))
    ranks = draw(st.permutations(range(count)))
    rows: list[Row] = []
    for k in range(count):
        data: dict[str, Any] = {"k": k}
        for f in FIELDS[:-1]:
            if draw(st.integers(0, 4)) == 0:
                if draw(st.booleans()):
                    data[f["name"]] = None  # "no value", as absent
                continue
            if f["type"] == "string" and long_at == k and f["name"] == "s":
                data["s"] = draw(LONG_STRINGS)
            elif f["type"] == "string" and rows and draw(st.booleans()):
                # Reuse another record's text in another case: ties and case variants.
                other = draw(st.sampled_from(rows)).data.get(f["name"]) or ""
                data[f["name"]] = draw(st.sampled_from(_variants(other)))
            else:
                data[f["name"]] = draw(_field_values(f["type"]))
        micros = draw(
            st.sampled_from([0, 1, 999_999, 1_000_000, 1_500_000, 2_000_000, 2_999_999])
            | st.integers(0, 6_000_000)
        )
        created = BASE_TIME + timedelta(microseconds=micros)
        updated = created + timedelta(microseconds=draw(st.sampled_from([0, 1, 999_999, 10**6])))
        rows.append(
            Row(data, f"{ID_PREFIX}{ranks[k]:08d}", created, updated, draw(st.integers(1, 4)))
        )
    leaves = _conditions(rows)
    trees = st.recursive(
        leaves,
        lambda children: st.one_of(
            st.builds(lambda xs: {"_and": xs}, st.lists(children, min_size=1, max_size=3)),
            st.builds(lambda xs: {"_or": xs}, st.lists(children, min_size=1, max_size=3)),
            st.builds(lambda x: {"_not": x}, children),
            st.builds(lambda x, y: {**x, **y}, children, children),
        ),
        max_leaves=5,
    )
    sort = st.lists(
        st.builds(
            lambda name, down: f"-{name}" if down else name,
            st.sampled_from(SORTABLE),
            st.booleans(),
        ),
        max_size=3,
    )
    queries = draw(
        st.lists(
            st.builds(
                Query,
                st.none() | leaves | trees,
                sort,
                st.integers(1, 3),
                st.sampled_from([1, 2, 3, 5, 20]),
            ),
            min_size=3,
            max_size=12,
        )
    )
    return Scenario(rows, queries)


def _conditions(rows: list[Row]) -> st.SearchStrategy[dict[str, Any]]:
    """`{field: {op: operand[, op: operand]}}` with operands near the records' values."""

    @st.composite
    def condition(draw: st.DrawFn) -> dict[str, Any]:
        name = draw(st.sampled_from([n for n in TYPES if n != "k"] + ["s", "t", "s", "t"]))
        ops: dict[str, Any] = {}
        for _ in range(draw(st.integers(1, 2))):
            op, operand = draw(_operation(name, rows))
            ops[op] = operand
        return {name: ops}

    return condition()


def _operation(name: str, rows: list[Row]) -> st.SearchStrategy[tuple[str, Any]]:
    kind = TYPES[name]
    if kind in ("object", "array"):
        return st.tuples(st.sampled_from(["_null", "_nnull"]), st.booleans())
    values = _operands(name, rows)
    ops: list[st.SearchStrategy[tuple[str, Any]]] = [
        st.tuples(st.sampled_from(COMPARISONS), values),
        st.tuples(st.sampled_from(COMPARISONS), values),
        st.tuples(st.sampled_from(["_in", "_nin"]), st.lists(values, max_size=4)),
        st.tuples(st.just("_between"), st.lists(values, min_size=2, max_size=2)),
        st.tuples(st.sampled_from(["_null", "_nnull"]), st.booleans()),
    ]
    if kind in ("string", "id"):
        ops.extend(
            st.tuples(st.just(op), values) for op in ("_contains", "_icontains", "_starts_with")
        )
    return st.one_of(*ops)


def _operands(name: str, rows: list[Row]) -> st.SearchStrategy[Any]:
    kind = TYPES[name]
    seen: list[Any] = []
    near: list[Any]
    fresh: st.SearchStrategy[Any]
    for row in rows:
        if kind == "id":
            seen.append(row.id)
        elif kind == "time":
            seen.append(row.created if name == "createdTime" else row.updated)
        elif name == "version":
            seen.append(row.version)
        elif row.data.get(name) is not None:
            seen.append(row.data[name])
    if kind in ("string", "id"):
        near = [v for text in seen for v in _variants(text)]
        fresh = STRINGS | st.sampled_from(["~", "0", ID_PREFIX, ID_PREFIX.upper()])
    elif kind == "integer":
        near = [*seen, *(v + d for v in seen for d in (-1, 1) if INT_MIN <= v + d <= INT_MAX)]
        near += [float(v) for v in seen] + [v + 0.5 for v in seen if abs(v) < 2**52]
        fresh = (
            INTS | FLOATS.filter(lambda v: abs(v) < 1e300) | st.sampled_from([2.0**63, -(2.0**63)])
        )
    elif kind == "number":
        near = [*seen, *(math.nextafter(v, math.inf) for v in seen), *(-v for v in seen)]
        near = [v for v in near if math.isfinite(v)]  # an infinity is refused, alike
        fresh = FLOATS | st.sampled_from([2**53 + 1, INT_MAX, INT_MIN])
    elif kind == "boolean":
        return st.sampled_from([True, False, 0, 1])
    elif kind == "datetime":
        near = [v for v in seen if isinstance(v, str)]
        fresh = DATETIMES
    else:  # a built-in time: whole seconds around the records', as the API shows them
        near = [
            _datetime_text(BASE_TIME.replace(tzinfo=None) + timedelta(seconds=s), "Z")
            for s in range(-1, 9)
        ]
        near += [(BASE_TIME + timedelta(seconds=2)).astimezone(UTC).isoformat()]
        fresh = st.sampled_from(["2026-03-01T13:00:03+01:00", "2026-03-01T12:00:01z"])
    return st.sampled_from(near) | fresh if near else fresh


# --- the model ------------------------------------------------------------------------------


def fold(text: str) -> str:
    """Letter-by-letter lower case (docs/builder.md: "ÉCOLE" contains "école"): no final sigma,
    "İ" is "i"."""
    return "".join("i" if char == "İ" else char.lower() for char in text)


@dataclass
class Model:
    rows: list[Row]
    clean: list[dict[str, Any]] = field(default_factory=list)

    def value(self, row: Row, clean: dict[str, Any], name: str) -> Any:
        if name == "id":
            return row.id
        if name == "version":
            return row.version
        if name == "createdTime":
            return row.created
        if name == "updatedTime":
            return row.updated
        return clean.get(name)

    def matches(self, tree: Any, row: Row, clean: dict[str, Any]) -> bool | None:
        parts: list[bool | None] = []
        for key, value in tree.items():
            if key == "_and":
                parts.append(_and([self.matches(v, row, clean) for v in value]))
            elif key == "_or":
                parts.append(_or([self.matches(v, row, clean) for v in value]))
            elif key == "_not":
                inner = self.matches(value, row, clean)
                parts.append(None if inner is None else not inner)
            else:
                here = self.value(row, clean, key)
                parts.extend(self.test(key, here, op, arg) for op, arg in value.items())
        return _and(parts)

    def test(self, name: str, value: Any, op: str, operand: Any) -> bool | None:
        kind = TYPES[name]
        if op == "_null":
            return bool((value is None) == operand)
        if op == "_nnull":
            return bool((value is not None) == operand)
        if op in ("_in", "_nin"):
            if not operand:
                # SQL's `x IN ()` is false and `x NOT IN ()` true, also for a null `x`: "an empty
                # set: nothing is in it, null included" (tests/unit/tools/test_filters.py, and
                # `tools/filters._granular_list`), though docs/builder.md says a record without a
                # value matches no comparison. The same on both backends.
                return op == "_nin"
            if value is None:
                return None
            found = any(self.compare(kind, value, "_eq", item) for item in operand)
            return found if op == "_in" else not found
        if value is None:
            return None
        if op == "_between":
            low, high = operand
            return self.compare(kind, value, "_gte", low) and self.compare(
                kind, value, "_lte", high
            )
        if op == "_contains":
            return bool(operand in value)
        if op == "_starts_with":
            return bool(value.startswith(operand))
        if op == "_icontains":
            return fold(operand) in fold(value)
        return self.compare(kind, value, op, operand)

    @staticmethod
    def compare(kind: str, value: Any, op: str, operand: Any) -> bool:
        if kind == "time":
            # Shown in whole seconds: an operand stands for its whole second.
            second = datetime.fromisoformat(operand.replace("z", "Z")).astimezone(UTC)
            after = second + timedelta(seconds=1)
            return bool(
                {
                    "_eq": second <= value < after,
                    "_neq": not second <= value < after,
                    "_lt": value < second,
                    "_lte": value < after,
                    "_gt": value >= after,
                    "_gte": value >= second,
                }[op]
            )
        if kind == "number":
            operand = float(operand)  # a number field compares doubles (`bind_value`)
        elif kind == "boolean":
            operand = bool(operand)
        elif kind == "datetime":
            value = datetime.fromisoformat(value)
            operand = datetime.fromisoformat(operand.replace("z", "Z"))
            if operand.tzinfo is None:
                operand = operand.replace(tzinfo=UTC)
            operand = operand.replace(microsecond=0)  # stored and compared to the second
        return bool(
            {
                "_eq": value == operand,
                "_neq": value != operand,
                "_lt": value < operand,
                "_lte": value <= operand,
                "_gt": value > operand,
                "_gte": value >= operand,
            }[op]
        )

    def answer(self, query: Query) -> tuple[list[int], int]:
        """(the page's record positions `k`, the total count)."""
        pairs = list(zip(self.rows, self.clean, strict=True))
        if query.tree is not None:
            pairs = [(r, c) for r, c in pairs if self.matches(query.tree, r, c)]
        keys = [(key.lstrip("-"), key.startswith("-")) for key in query.sort] or [
            ("createdTime", True)
        ]
        names = {name for name, _ in keys}
        descending = keys[0][1]
        if "createdTime" not in names:
            keys.append(("createdTime", descending))
        if "id" not in names:
            keys.append(("id", descending))

        def order(a: tuple[Row, dict[str, Any]], b: tuple[Row, dict[str, Any]]) -> int:
            for name, down in keys:
                x, y = self.value(*a, name), self.value(*b, name)
                if x is None or y is None:
                    if x is None and y is None:
                        continue
                    # Nulls last ascending, first descending (docs/builder.md `sort`).
                    return (1 if x is None else -1) * (-1 if down else 1)
                if TYPES[name] == "datetime":
                    x, y = datetime.fromisoformat(x), datetime.fromisoformat(y)
                if x != y:
                    return (-1 if x < y else 1) * (-1 if down else 1)
            return 0

        pairs.sort(key=functools.cmp_to_key(order))
        start = (query.page_no - 1) * query.page_size
        page = pairs[start : start + query.page_size]
        return [c["k"] for _, c in page], len(pairs)


def _and(parts: list[bool | None]) -> bool | None:
    if any(p is False for p in parts):
        return False
    return None if any(p is None for p in parts) else True


def _or(parts: list[bool | None]) -> bool | None:
    if any(p is True for p in parts):
        return True
    return None if any(p is None for p in parts) else False


def _depth(tree: Any) -> int:
    if not isinstance(tree, dict):
        return 0
    deepest = 0
    for key, value in tree.items():
        if key in ("_and", "_or"):
            deepest = max(deepest, *(_depth(v) for v in value))
        elif key == "_not":
            deepest = max(deepest, _depth(value))
    return 1 + deepest


# --- the backends ---------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    engine: AsyncEngine
    cipher: FieldCipher
    schema: CollectionSchema
    partition: str  # the builder's workspace: writes land only in a workspace that exists

    async def load(self, rows: list[Row]) -> list[dict[str, Any]]:
        """Replace the collection's records with `rows`; their stored (clean) data back."""
        out = []
        async with self.engine.begin() as connection:
            await connection.execute(delete(Record).where(Record.collection_id == self.schema.id))
            store = RecordStore(connection, self.cipher)
            for row in rows:
                record = await store.insert(self.schema, self.partition, row.data)
                await connection.execute(
                    update(Record)
                    .where(Record.id == record["id"])
                    .values(
                        id=row.id,
                        created_at=row.created,
                        updated_at=row.updated,
                        version=row.version,
                    )
                )
                out.append({f["name"]: record[f["name"]] for f in FIELDS})
        return out

    async def run(self, query: Query) -> tuple[str, Any]:
        """`("ok", page)` or `("error", message)`; the prepared page must equal `get_many`'s."""
        async with self.engine.connect() as connection:
            store = RecordStore(connection, self.cipher)
            try:
                where = (
                    None
                    if query.tree is None
                    else record_filter(connection.dialect, self.schema, query.tree)
                )
            except FilterValueError as exc:
                return "error", str(exc)
            try:
                page = await store.get_many(
                    self.schema,
                    self.partition,
                    where=where,
                    sort=query.sort,
                    page_no=query.page_no,
                    page_size=query.page_size,
                )
            except Exception as exc:  # a database error: a divergence whatever it is
                return "error", f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            prepared = store.prepare_page(self.schema, where=where, sort=query.sort)
            if prepared is not None:
                again = await prepared.run(store, self.partition, query.page_no, query.page_size)
                assert _dump(again) == _dump(page), f"{self.name}: prepared page differs"
            return "ok", page


def _dump(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


async def _backend(name: str, app: FastAPI, client: AsyncClient) -> Backend:
    alice = await register(client)
    app_id = await app_row(app, alice.workspace_id, "Parity")
    cipher = FieldCipher(app.state.settings.signing_key)
    tenants = Tenants(app, alice.workspace_id, alice.workspace_id, app_id, cipher)
    async with app.state.engine.begin() as connection:
        schema = await tenants.new_collection(connection, "parity", FIELDS)
    return Backend(name, app.state.engine, cipher, schema, alice.workspace_id)


@dataclass
class World:
    """What the examples of one test run share (hypothesis calls the test once per example)."""

    app: Any = None
    backends: list[Backend] = field(default_factory=list)


WORLD = World()


@pytest.fixture(scope="module")
def embedded_template(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """With PostgreSQL configured, a migrated embedded SQLite database (else None): migrated
    here, outside the tests' event loop, which the migrations' own would not run in."""
    if not DATABASE_URL:
        return None
    directory = tmp_path_factory.mktemp("embedded")
    upgrade(Settings(data_dir=directory))
    return directory / "apiforge.db"


@pytest.fixture
async def embedded(
    settings: Settings, tmp_path: Path, embedded_template: Path | None
) -> AsyncIterator[FastAPI | None]:
    """With PostgreSQL configured, a second app on an embedded SQLite database; else None."""
    if embedded_template is None:
        yield None
        return
    data_dir = tmp_path / "embedded"
    data_dir.mkdir()
    MemoryNonceStore().save(data_dir / NONCE_FILE)
    shutil.copy(embedded_template, data_dir / "apiforge.db")
    local = settings.model_copy(
        update={"data_dir": data_dir, "database_url": "", "redis_url": None, "redis_prefix": ""}
    )
    application = create_app(local)
    yield application
    await shutdown(application)


async def _check(scenario: Scenario, backends: list[Backend]) -> None:
    rows = scenario.rows
    stored = [await backend.load(rows) for backend in backends]
    for backend, clean in zip(backends[1:], stored[1:], strict=True):
        assert _dump(clean) == _dump(stored[0]), f"stored records differ on {backend.name}"
    model = Model(rows, stored[0])
    for query in scenario.queries:
        note(f"query: {query!r}")
        answers = [(backend.name, await backend.run(query)) for backend in backends]
        expected_error = query.tree is not None and _depth(query.tree) > MAX_DEPTH
        first_name, first = answers[0]
        for name, answer in answers[1:]:
            assert _dump(answer) == _dump(first), (
                f"{name} and {first_name} differ on {query!r}:\n"
                f"{name}: {answer!r}\n{first_name}: {first!r}"
            )
        for name, (status, result) in answers:
            if expected_error:
                assert status == "error", f"{name}: {query!r} should be refused"
                continue
            assert status == "ok", f"{name}: {query!r} refused: {result}"
            keys, total = model.answer(query)
            got = [record["k"] for record in result["list"]]
            assert (got, result["totalCount"]) == (keys, total), (
                f"{name} differs from the model on {query!r}:\n"
                f"got {got} of {result['totalCount']}, model {keys} of {total}"
            )
            for record in result["list"]:
                row, clean = rows[record["k"]], stored[0][record["k"]]
                assert record == {
                    "id": row.id,
                    **clean,
                    "version": row.version,
                    "createdTime": row.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "updatedTime": row.updated.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }


SETTINGS = hypothesis_settings(
    max_examples=100,
    deadline=None,
    database=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


@SETTINGS
@given(scenario=scenarios())
async def test_queries_answer_as_the_model(
    app: FastAPI, client: AsyncClient, scenario: Scenario
) -> None:
    """The session's backend (SQLite, or PostgreSQL when configured) against the model."""
    if WORLD.app is not app:
        WORLD.app, WORLD.backends = app, [await _backend("session", app, client)]
    await _check(scenario, WORLD.backends)


@pytest.mark.skipif(not DATABASE_URL, reason="the differential half needs PostgreSQL")
@SETTINGS
@given(scenario=scenarios())
async def test_sqlite_and_postgresql_answer_alike(
    app: FastAPI, client: AsyncClient, embedded: FastAPI | None, scenario: Scenario
) -> None:
    """The same records and queries on PostgreSQL and on an embedded SQLite database: the same
    pages, byte for byte, and the model's."""
    assert embedded is not None
    if WORLD.app is not app:
        transport = ASGITransport(app=embedded, raise_app_exceptions=False)
        async with AsyncClient(transport=transport, base_url="http://testserver") as local:
            sqlite = await _backend("sqlite", embedded, local)
        WORLD.app, WORLD.backends = app, [sqlite, await _backend("postgresql", app, client)]
    await _check(scenario, WORLD.backends)


# --- what the property test found -----------------------------------------------------------


async def test_a_fractional_double_in_a_list_matches_no_integer(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    """`{"i": {"_in": [1.5]}}` matched `i = 1` on PostgreSQL only: the list was bound as
    bigints, and the driver truncated 1.5 (and 5e-324 to 0)."""
    numbers = await tenants.new_collection(
        connection, "numbers", [{"name": "i", "type": "integer"}]
    )
    for i in (0, 1, 2):
        await store.insert(numbers, tenants.a, {"i": i})
    for tree, expected in (
        ({"i": {"_in": [1.5, 5e-324]}}, 0),
        ({"i": {"_in": [2, 0.5]}}, 1),
        ({"i": {"_nin": [1.5, -0.5]}}, 3),
        ({"i": {"_nin": [1.0, 2.5]}}, 2),
        ({"version": {"_in": [1.5]}}, 0),
    ):
        where = record_filter(connection.dialect, numbers, tree)
        assert await store.count(numbers, tenants.a, where) == expected, tree
        prepared = store.prepare_page(numbers, where=where)
        assert prepared is not None
        assert (await prepared.run(store, tenants.a, 1, 10))["totalCount"] == expected, tree


async def test_number_fields_show_the_doubles_stored(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    """PostgreSQL's JSONB gave -0.0 back as 0 and 5.678214014312166e16 as the integer
    56782140143121660 (not even the double's value), where SQLite gave back the doubles."""
    numbers = await tenants.new_collection(connection, "numbers", [{"name": "n", "type": "number"}])
    values = [-0.0, 5.678214014312166e16, 1e16, -1e300, 2**60, 2**53, 0.5]
    for n in values:
        await store.insert(numbers, tenants.a, {"n": n})
    page = await store.get_many(numbers, tenants.a, sort=["createdTime"], page_size=10)
    shown = [record["n"] for record in page["list"]]
    assert orjson.dumps(shown) == orjson.dumps([0.0, *values[1:4], 2.0**60, 2**53, 0.5])


async def test_documents_show_the_same_numbers_on_every_backend(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    """PostgreSQL's JSONB gave -0.0 inside an object back as 0.0 but SQLite as -0.0, and 1e16 as
    the integer 10000000000000000 but SQLite as the double: a document read back differently
    per backend. Both now store what JSONB can give back."""
    documents = await tenants.new_collection(
        connection, "documents", [{"name": "o", "type": "object"}, {"name": "a", "type": "array"}]
    )
    values = [-0.0, 1e16, 5.678214014312166e16, 2.0**53, 2.0**53 - 1, 9.2e18, 1e19, -1e300, 0.5]
    numbers: dict[str, Any] = {"n": values, "m": {"z": -0.0}}
    written = {"o": numbers, "a": [values, [1e16]]}
    await store.insert(documents, tenants.a, written)
    page = await store.get_many(documents, tenants.a, page_size=10)
    shown = [10000000000000000, 56782140143121664, 9007199254740992, 9007199254740991.0]
    shown = [0.0, *shown, 9200000000000000000, 1e19, -1e300, 0.5]
    record = page["list"][0]
    assert _dump([record["o"], record["a"]]) == _dump(
        [{"n": shown, "m": {"z": 0.0}}, [shown, [10000000000000000]]]
    )  # sorted keys: JSONB orders an object's keys its own way
    assert orjson.dumps(numbers["n"]) == orjson.dumps(values)  # the caller's is untouched
