"""Reading and writing records, always inside one (collection, partition).

Every statement this store runs is scoped by `collection_id = '<id>' AND partition = :partition`,
where the partition is the calling workspace: a record id from another workspace or collection
is simply not found, never read, changed or deleted. Record data is validated against the
collection's fields on every write, encrypted fields are encrypted before they reach SQL and
decrypted on the way out, and `version` gives optimistic locking (a stale version is a 409).

Records come out as `{"id", <every field, null when absent>, "version", "createdTime",
"updatedTime"}`. The store never commits: it works on the caller's connection and transaction.
"""

import dataclasses
import math
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, Literal, overload

import orjson
import structlog
from sqlalchemy import (
    ColumnElement,
    Float,
    Integer,
    Row,
    String,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.db import TransactionEnd, begin_as_writer
from apiforge.core.errors import (
    ApiforgeError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    UnavailableError,
    ValidationError,
)
from apiforge.core.integrity import violation
from apiforge.core.lazydb import SqliteReader, Statement, driver_rows, shared_reader
from apiforge.datasets.crypto import DecryptionError, FieldCipher
from apiforge.datasets.holding import TABLE_FIRST, PartitionGoneError, workspaces_held
from apiforge.datasets.models import Collection, Record
from apiforge.datasets.schema import (
    INT_MAX,
    INT_MIN,
    Basis,
    CollectionSchema,
    FieldKinds,
    field_kinds,
    validate_record,
)
from apiforge.datasets.sql import (
    BUILTIN_TYPES,
    collection_predicate,
    field_expression,
    operand,
    unique_field,
)
from apiforge.plans.meter import reserve_stock
from apiforge.tools.clock import iso, utcnow
from apiforge.tools.ids import is_id, new_id
from apiforge.workspaces.models import Workspace

MAX_RECORD_BYTES: Final = 256 * 1024
MAX_PAGE_SIZE: Final = 1000
MAX_GROUPS: Final = 1000
AGGREGATE_OPS: Final = ("count", "sum", "avg", "min", "max")
MAX_COUNTED_PARTITIONS: Final = 4096  # totals a prepared page keeps (then it starts afresh)
UPSERT_ATTEMPTS: Final = 3  # an upsert whose record is deleted under it looks again
_LOW_BITS: Final = 2**32 - 1
_EXACT_INT: Final = 2**53  # past it, not every integer is a double
_COLLECTION_WRITES: Final = "SELECT writes FROM collection_writes WHERE collection_id = ?"

log = structlog.get_logger("apiforge.datasets")

_COLUMNS = (Record.id, Record.data, Record.version, Record.created_at, Record.updated_at)


class DatasetNotFoundError(NotFoundError):
    reason = "dataset_not_found"
    message = "Dataset not found"


class RecordNotFoundError(NotFoundError):
    reason = "record_not_found"
    message = "Record not found"


class VersionConflictError(ConflictError):
    """The caller edited a version that is no longer current (optimistic locking)."""

    reason = "version_conflict"
    message = "The record was changed since that version; reload it and try again"

    def __init__(self, current: int) -> None:
        super().__init__(details={"currentVersion": current})


class SchemaChangedError(ConflictError):
    """A write whose schema was loaded before a field's type or encryption changed: its value
    would be of the old kind, which the collection's filters, sorts and reads no longer expect."""

    reason = "schema_changed"
    message = "The dataset's fields changed while this write ran; try again"
    retry_after: Final = 1  # a node trusts the schema it resolved for up to a second

    def __init__(self, names: Sequence[str]) -> None:
        errors = [{"field": n, "message": "its type or encryption changed"} for n in names]
        super().__init__(
            details={"errors": errors, "retryAfter": self.retry_after},
            headers={"Retry-After": str(self.retry_after)},
        )


class RecordInvalidError(ValidationError):
    reason = "invalid_record"
    message = "Record data does not match the collection's fields"


def _sort_key(
    schema: CollectionSchema, key: str, dialect: Any
) -> tuple[ColumnElement[Any], bool, bool]:
    """`"-views"` -> (expression, descending, nullable: a field's, not a built-in column's);
    unknown or unsortable fields are a 400."""
    descending = key.startswith("-")
    name = key[1:] if descending else key
    op = operand(dialect, schema, name)
    f = schema.field(name)
    if op is None or (f is not None and not f.sortable):
        raise ValidationError(
            errors=[{"field": "sort", "message": f"cannot sort by '{name}'"}],
            reason="invalid_sort_field",
        )
    return op.expression, descending, f is not None


def _ordered(expr: ColumnElement[Any], descending: bool, nullable: bool) -> ColumnElement[Any]:
    """A sort key; a field's nulls come last ascending and first descending on every backend
    (PostgreSQL's default: SQLite's is the reverse). SQLite still walks the field's index."""
    if not nullable:
        return expr.desc() if descending else expr.asc()
    return expr.desc().nulls_first() if descending else expr.asc().nulls_last()


# Bound values a driver takes as they are (no SQLAlchemy bind processing needed).
_PLAIN_VALUES = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class PreparedPage:
    """A `get_many` whose statements are the same on every call (its filter holds no expression),
    compiled once to SQL text and run on the driver connection underneath SQLAlchemy's.

    Building, caching-by-key and compiling a Core statement costs several hundred microseconds per
    call, and every statement through SQLAlchemy's async adaptor several hops to the driver's
    thread; here each statement is one driver call (`execute_fetchall` on aiosqlite, `fetch` on
    asyncpg). It runs on the call's own connection, so it sees the call's own uncommitted writes.
    """

    schema: CollectionSchema
    fields: tuple[str, ...] | None
    page_sql: str
    page_binds: tuple[str, ...]  # positional bind names, in the order the SQL text expects
    count_sql: str | None
    count_binds: tuple[str, ...]
    values: dict[str, Any]  # the statement's constant binds (filter literals)
    # partition -> (its collection's write count, the count then): see `_read_committed`
    counts: dict[str, tuple[int, int]] = dataclasses.field(default_factory=dict, compare=False)

    async def run(
        self, store: "RecordStore", partition: str, page_no: int, page_size: int
    ) -> dict[str, Any]:
        _check_page(page_no, page_size)
        values = {
            **self.values,
            "_partition": partition,
            "_limit": page_size,
            "_offset": (page_no - 1) * page_size,
        }
        page_params = [values[b] for b in self.page_binds]
        count_params = [values[b] for b in self.count_binds]
        total: int | None = None
        reader = shared_reader(store.connection)
        if reader is not None:
            work = partial(self._read_committed, reader, partition, page_params, count_params)
            rows, total = await reader.call(work)
        else:
            statements: list[Statement] = [(self.page_sql, page_params)]
            if self.count_sql is not None:
                statements.append((self.count_sql, count_params))
            rows, *counted = await driver_rows(store.connection, statements)
            if counted:
                total = int(counted[0][0][0])
        wanted = None if self.fields is None else frozenset(self.fields)
        out = []
        for row in rows:
            data = row[1]
            record = store._render(
                self.schema,
                row[0],
                orjson.loads(data) if isinstance(data, str | bytes) else data,
                row[2],
                row[3],
                row[4],
                wanted,
            )
            if self.fields is not None:
                record = {"id": record["id"], **{name: record.get(name) for name in self.fields}}
            out.append(record)
        page: dict[str, Any] = {"list": out, "pageNo": page_no, "pageSize": page_size}
        if total is not None:
            page["totalCount"] = total
            page["totalPage"] = math.ceil(total / page_size) if total else 0
        return page

    def _read_committed(
        self,
        reader: SqliteReader,
        partition: str,
        page_params: list[Any],
        count_params: list[Any],
        db: sqlite3.Connection,
    ) -> tuple[list[Any], int | None]:
        """On the shared reader's thread: the page and its total from one snapshot. Counting
        reads every matching index entry (most of the call's SQLite time), so a total is kept
        with the number of record writes its collection had seen; while that number is the same
        (a trigger raises it in every writing transaction, whoever writes), so is the total."""
        db.execute("BEGIN")
        try:
            rows = db.execute(self.page_sql, page_params).fetchall()
            if self.count_sql is None:
                return rows, None
            writes = None
            if reader.writes_counted:
                found = db.execute(_COLLECTION_WRITES, (self.schema.id,)).fetchone()
                writes = 0 if found is None else int(found[0])
                cached = self.counts.get(partition)
                if cached is not None and cached[0] == writes:
                    return rows, cached[1]
            total = int(db.execute(self.count_sql, count_params).fetchone()[0])
            if writes is not None:
                if len(self.counts) >= MAX_COUNTED_PARTITIONS:
                    self.counts.clear()
                self.counts[partition] = (writes, total)
            return rows, total
        finally:
            db.execute("COMMIT")


def _check_page(page_no: int, page_size: int) -> None:
    if not 1 <= page_size <= MAX_PAGE_SIZE or page_no < 1:
        raise ValidationError(
            errors=[{"field": "pageSize", "message": f"must be 1..{MAX_PAGE_SIZE}"}]
            if page_no >= 1
            else [{"field": "pageNo", "message": "must be 1 or more"}]
        )


def _stamp(value: Any) -> str:
    """A stored time as the API shows it. SQLite hands back its stored text
    (`YYYY-MM-DD HH:MM:SS[.ffffff]`, always UTC): sliced, not parsed and re-formatted."""
    if isinstance(value, str):
        return f"{value[:10]}T{value[11:19]}Z"
    return iso(value)


class RecordStore:
    """Records of any collection on one connection; the caller owns the transaction, and
    reports its end (`ends`) to the quota meter when the connection does not itself (a
    session's: `core.db.SessionEnd`)."""

    def __init__(
        self,
        connection: AsyncConnection,
        cipher: FieldCipher | None,
        *,
        ends: TransactionEnd | None = None,
    ) -> None:
        self.connection = connection
        self._cipher = cipher
        self.ends = ends

    @property
    def cipher(self) -> FieldCipher:
        """Needed only for collections with encrypted fields; a missing one is a server fault."""
        if self._cipher is None:
            raise UnavailableError(
                "Encrypted fields are not available on this server", reason="encryption_unavailable"
            )
        return self._cipher

    # --- reads ----------------------------------------------------------------------------------

    def scope(self, schema: CollectionSchema, partition: str) -> ColumnElement[bool]:
        """The predicate every statement carries: this collection, this workspace's partition."""
        return and_(collection_predicate(schema.id), Record.partition == partition)

    async def get_one(
        self,
        schema: CollectionSchema,
        partition: str,
        record_id: str | None = None,
        *,
        where: ColumnElement[bool] | None = None,
        sort: Sequence[str] = (),
        fields: Sequence[str] | None = None,
    ) -> dict[str, Any] | None:
        """One record by id, or the first matching `where` in `sort` order; None when none."""
        if record_id is not None and not is_id(record_id):
            return None
        stmt = select(*_COLUMNS).where(self.scope(schema, partition))
        if record_id is not None:
            stmt = stmt.where(Record.id == record_id)
        if where is not None:
            stmt = stmt.where(where)
        stmt = stmt.order_by(*self._order(schema, sort)).limit(1)
        row = (await self.connection.execute(stmt)).first()
        return None if row is None else self._out(schema, row, fields)

    async def get_many(
        self,
        schema: CollectionSchema,
        partition: str,
        *,
        where: ColumnElement[bool] | None = None,
        sort: Sequence[str] = ("-createdTime",),
        page_no: int = 1,
        page_size: int = 20,
        fields: Sequence[str] | None = None,
        with_total: bool = True,
    ) -> dict[str, Any]:
        """A page: `{"list", "pageNo", "pageSize"}` plus `"totalCount", "totalPage"` when asked."""
        _check_page(page_no, page_size)
        condition = self.scope(schema, partition)
        if where is not None:
            condition = and_(condition, where)
        stmt = (
            select(*_COLUMNS)
            .where(condition)
            .order_by(*self._order(schema, sort))
            .limit(page_size)
            .offset((page_no - 1) * page_size)
        )
        rows = (await self.connection.execute(stmt)).all()
        page: dict[str, Any] = {
            "list": [self._out(schema, row, fields) for row in rows],
            "pageNo": page_no,
            "pageSize": page_size,
        }
        if with_total:
            total = await self._count(condition)
            page["totalCount"] = total
            page["totalPage"] = math.ceil(total / page_size) if total else 0
        return page

    def prepare_page(
        self,
        schema: CollectionSchema,
        *,
        where: ColumnElement[bool] | None = None,
        sort: Sequence[str] = ("-createdTime",),
        fields: Sequence[str] | None = None,
        with_total: bool = True,
    ) -> PreparedPage | None:
        """`get_many`'s statements compiled for this connection's dialect, for a `where` that is
        the same on every call; None when a constant needs SQLAlchemy's bind processing."""
        dialect = self.connection.dialect
        condition = and_(
            collection_predicate(schema.id), Record.partition == bindparam("_partition", "", String)
        )
        if where is not None:
            condition = and_(condition, where)
        page = (
            select(*_COLUMNS)
            .where(condition)
            .order_by(*self._order(schema, sort))
            .limit(bindparam("_limit", 1, Integer))
            .offset(bindparam("_offset", 0, Integer))
        )
        options = {"render_postcompile": True}
        compiled = page.compile(dialect=dialect, compile_kwargs=options)
        values = {k: v for k, v in compiled.params.items() if not k.startswith("_")}
        binds = tuple(compiled.positiontup or ())
        if not all(isinstance(v, _PLAIN_VALUES) for v in values.values()) or not {
            "_partition",
            "_limit",
            "_offset",
        } <= set(binds):
            return None  # a value needs bind processing, or the dialect inlined the paging
        count_sql: str | None = None
        count_binds: tuple[str, ...] = ()
        if with_total:
            counted = (select(func.count()).select_from(Record).where(condition)).compile(
                dialect=dialect, compile_kwargs=options
            )
            count_sql, count_binds = str(counted), tuple(counted.positiontup or ())
        return PreparedPage(
            schema=schema,
            fields=None if fields is None else tuple(fields),
            page_sql=str(compiled),
            page_binds=binds,
            count_sql=count_sql,
            count_binds=count_binds,
            values=values,
        )

    async def count(
        self, schema: CollectionSchema, partition: str, where: ColumnElement[bool] | None = None
    ) -> int:
        condition = self.scope(schema, partition)
        return await self._count(condition if where is None else and_(condition, where))

    async def aggregate(
        self,
        schema: CollectionSchema,
        partition: str,
        *,
        where: ColumnElement[bool] | None = None,
        group_by: Sequence[str] = (),
        metrics: Mapping[str, tuple[str, str | None]],
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Rows of `{<groupBy field>: value, ..., <metric name>: value}`, ordered by the groups
        (ascending, a field's null group last on every backend, so `limit` keeps the same ones).

        `metrics` maps an output name to (op, field): `count` (field optional), `sum`/`avg` of a
        number, `min`/`max` of any sortable field (booleans: false < true). An integer sum is
        exact on every backend; one outside 64 bits is a 422 `aggregate_overflow`."""
        dialect = self.connection.dialect
        columns: list[ColumnElement[Any]] = []
        groups: list[ColumnElement[Any]] = []
        order: list[ColumnElement[Any]] = []
        for name in group_by:
            expression, _, nullable = _sort_key(schema, name, dialect)
            groups.append(expression)
            order.append(_ordered(expression, False, nullable))  # the null group last, as getMany
            columns.append(expression.label(f"g_{len(groups)}"))
        widths: list[int] = []  # database columns per metric (an exact SQLite sum takes two)
        for i, (op_name, field) in enumerate(metrics.values()):
            parts = self._metric(schema, op_name, field)
            columns.extend(part.label(f"m_{i}_{j}") for j, part in enumerate(parts))
            widths.append(len(parts))
        condition = self.scope(schema, partition)
        if where is not None:
            condition = and_(condition, where)
        stmt = select(*columns).select_from(Record).where(condition)
        if groups:
            stmt = stmt.group_by(*groups).order_by(*order)
        rows = (await self.connection.execute(stmt.limit(min(limit, MAX_GROUPS)))).all()
        names = [*group_by, *metrics]
        types = [self._type(schema, n) for n in group_by] + [
            "integer" if op_name == "count" else self._type(schema, field or "")
            for op_name, field in metrics.values()
        ]
        ops = [None] * len(group_by) + [op_name for op_name, _ in metrics.values()]
        fields = [*group_by, *(field or "" for _, field in metrics.values())]
        out: list[dict[str, Any]] = []
        for row in rows:
            values = list(row[: len(group_by)])
            at = len(group_by)
            for width in widths:
                values.append(_halves(row[at], row[at + 1]) if width == 2 else row[at])
                at += width
            out.append(
                {
                    name: _plain(value, kind, op_name, field)
                    for name, value, kind, op_name, field in zip(
                        names, values, types, ops, fields, strict=True
                    )
                }
            )
        return out

    # --- writes ---------------------------------------------------------------------------------

    async def insert(
        self, schema: CollectionSchema, partition: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        clean, errors = validate_record(schema, data)
        if errors:
            raise RecordInvalidError(errors=errors)
        encrypted = self._encrypt(schema, clean)
        # Plan quotas `records` and `storageBytes` of the partition's workspace (in-process),
        # before the collection's row is held: on SQLite that hold is the database's write lock,
        # and the meter decides while other writes are in flight (it counts them).
        await reserve_stock(
            self.connection, partition, records=1, size=_size(encrypted), ends=self.ends
        )
        basis = self._unheld(schema)
        if basis is not None:
            # The writer's lock first, as `_hold_fields` takes it: the uniqueness check and the
            # write see the same database, and no statement of the call's transaction has to
            # upgrade a read snapshot another writer may have made stale (refused at once,
            # "database is locked", whatever the busy timeout). One hop to the driver's thread
            # for BEGIN; the fields are not read unless the version moved.
            await begin_as_writer(self.connection)
            record = await self._insert_as(
                schema, partition, clean, encrypted, basis.kinds, basis.version
            )
            if record is not None:
                return record
        fields = await self._hold_fields(schema, partition)
        record = await self._insert_as(schema, partition, clean, encrypted, fields, None)
        if record is None:  # an unconditional insert inserts, or raises
            raise AssertionError("unreachable")
        return record

    async def _insert_as(
        self,
        schema: CollectionSchema,
        partition: str,
        clean: Mapping[str, Any],
        encrypted: dict[str, Any],
        fields: FieldKinds,
        version: int | None,
    ) -> dict[str, Any] | None:
        """The insert, checked against the collection's `fields` (`_kept`). With the `version`
        they are the fields of (`Basis`), it applies only while the collection has it: None when
        it has another or is gone. Without, they were read under the lock (`_hold_fields`)."""
        await self._ensure_unique(schema, partition, clean, exclude=None)
        stored = _kept(schema, encrypted, fields, {})
        now = utcnow()
        record_id = new_id()
        size = _size(stored)  # less than reserved only if a field removed meanwhile was dropped
        values = {
            "id": record_id,
            "collection_id": schema.id,
            "partition": partition,
            "data": stored,
            "version": 1,
            "size": size,
            "created_at": now,
            "updated_at": now,
        }
        if version is not None:
            columns = Record.__table__.c
            row = select(*(literal(v, columns[k].type) for k, v in values.items()))
            stmt: Any = insert(Record).from_select(
                list(values), row.where(_at_version(schema.id, version, partition))
            )
        else:
            stmt = insert(Record).values(**values)
        if not await self._write(schema, stmt):
            return None
        return self._render(schema, record_id, stored, 1, now, now)

    async def update(
        self,
        schema: CollectionSchema,
        partition: str,
        record_id: str,
        data: Mapping[str, Any],
        *,
        version: int | None = None,
        replace: bool = False,
    ) -> dict[str, Any]:
        """Merge `data` into the record (`replace`: make it the whole record).

        With `version`, the write applies only to that version (else 409 `version_conflict`);
        without, it applies to the latest version, so a concurrent write is never silently
        lost. PostgreSQL reads that version under a row lock, SQLite under the write lock
        `_hold_fields` takes, so nothing changes it between that read and the (still
        conditional) write."""
        fields, current = await self._held_row(schema, partition, record_id)
        if version is not None and version != current.version:
            raise VersionConflictError(current.version)
        if replace:
            clean, errors = validate_record(schema, data)
            stored = {**_unknown(schema, current.data), **self._encrypt(schema, clean)}
        else:
            patch, errors = validate_record(schema, data, partial=True)
            stored, missing = self._merge(schema, current.data, patch)
            errors.extend(missing)
        if errors:
            raise RecordInvalidError(errors=errors)
        stored = _kept(schema, stored, fields, current.data)
        await self._ensure_unique(schema, partition, stored, exclude=record_id)
        now = utcnow()
        size = _size(stored)
        await reserve_stock(
            self.connection, partition, records=0, size=size - current.size, ends=self.ends
        )
        stmt = (
            update(Record)
            .where(
                self.scope(schema, partition),
                Record.id == record_id,
                Record.version == current.version,
            )
            .values(data=stored, version=current.version + 1, size=size, updated_at=now)
        )
        if await self._write(schema, stmt):
            new_version = current.version + 1
            return self._render(schema, record_id, stored, new_version, current.created_at, now)
        # Not reached while the locks hold (`_hold_fields`, `FOR UPDATE`): the version
        # condition stays as the guard that no write is ever lost.
        latest = await self._row(schema, partition, record_id)
        raise VersionConflictError(latest.version)

    async def delete(
        self,
        schema: CollectionSchema,
        partition: str,
        record_id: str,
        *,
        version: int | None = None,
    ) -> None:
        if not is_id(record_id):
            raise RecordNotFoundError()
        stmt = delete(Record).where(self.scope(schema, partition), Record.id == record_id)
        if version is not None:
            stmt = stmt.where(Record.version == version)
        # The row before the record's, as a write: the call may write in the collection next,
        # and a removal holding the row while it erases this record's values would wait for
        # this record while that write waits for the row. SQLite has one lock, which the
        # statement takes: the row is read only to say why it deleted nothing.
        sqlite = self.connection.dialect.name == "sqlite"
        if not sqlite:
            await self._hold_fields(schema, partition)
        if (await self.connection.execute(stmt)).rowcount:
            return
        if sqlite:
            await self._hold_fields(schema, partition)  # 404: the dataset or partition is gone
        current = await self._row(schema, partition, record_id)  # 404 when absent
        raise VersionConflictError(current.version)

    async def upsert(
        self, schema: CollectionSchema, partition: str, on: str, data: Mapping[str, Any]
    ) -> tuple[dict[str, Any], bool]:
        """Update the record whose unique field `on` equals `data[on]`, else insert one.
        Returns (record, created).

        A concurrent upsert of the same key may insert between our lookup and our insert: the
        insert is then refused (`duplicate_value`, from the check or the unique index) and
        this one updates the record the other inserted; a record deleted between our lookup
        and our update is looked for again (and inserted). On PostgreSQL the insert runs in a
        savepoint (a unique violation aborts the transaction); SQLite undoes only the refused
        statement, and a savepoint there would hold a read snapshot a concurrent commit makes
        stale before our write."""
        f = schema.field(on)
        if f is None or not f.unique:
            raise ValidationError(errors=[{"field": "on", "message": "must be a unique field"}])
        clean, errors = validate_record(schema, {on: data.get(on)}, partial=True)
        if errors or clean.get(on) is None:
            raise RecordInvalidError(errors=errors or [{"field": on, "message": "is required"}])
        stmt = (
            select(Record.id)
            .where(
                self.scope(schema, partition),
                field_expression(self.connection.dialect, f) == clean[on],
            )
            .limit(1)
        )
        for attempt in range(UPSERT_ATTEMPTS):
            existing = (await self.connection.execute(stmt)).scalar()
            if existing is None:
                try:
                    return await self._insert_alone(schema, partition, data), True
                except ConflictError as exc:
                    if exc.reason != "duplicate_value":
                        raise
                    existing = (await self.connection.execute(stmt)).scalar()
                    if existing is None:  # another unique field's value is taken: a real conflict
                        raise
            try:
                return await self.update(schema, partition, existing, data), False
            except RecordNotFoundError:
                # Deleted by a concurrent call since we found it: "create or update" then
                # creates, never answers 404.
                if attempt == UPSERT_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _insert_alone(
        self, schema: CollectionSchema, partition: str, data: Mapping[str, Any]
    ) -> dict[str, Any]:
        """`insert`, leaving the transaction usable when it is refused (see `upsert`)."""
        if self.connection.dialect.name == "sqlite":
            return await self.insert(schema, partition, data)
        async with self.connection.begin_nested():
            return await self.insert(schema, partition, data)

    # --- helpers --------------------------------------------------------------------------------

    def _order(self, schema: CollectionSchema, sort: Sequence[str]) -> list[ColumnElement[Any]]:
        """ORDER BY the keys, then `created_at, id` in the first key's direction: a total order
        that matches the indexes' trailing columns, so pages are stable and index-ordered."""
        dialect = self.connection.dialect
        keys = [_sort_key(schema, key, dialect) for key in sort] or [
            (Record.created_at.expression, True, False)
        ]
        descending = keys[0][1]
        names = {key.lstrip("-") for key in sort}
        if "createdTime" not in names:
            keys.append((Record.created_at.expression, descending, False))
        if "id" not in names:
            keys.append((Record.id.expression, descending, False))
        return [_ordered(expr, desc, nullable) for expr, desc, nullable in keys]

    async def _count(self, condition: ColumnElement[bool]) -> int:
        stmt = select(func.count()).select_from(Record).where(condition)
        return int((await self.connection.execute(stmt)).scalar_one())

    async def _hold_fields(self, schema: CollectionSchema, partition: str) -> FieldKinds:
        """The collection's fields as they are now (`FieldKinds`), its row held until commit
        (before any record's row: the order a schema change takes them in), so a change that
        removes a field or changes its type or encryption (`FOR UPDATE` on the row) and this
        write never interleave: PostgreSQL's `FOR KEY SHARE` (the lock an insert's foreign key
        takes anyway; writers never wait for each other), SQLite's write lock. A write with a
        schema loaded before such a change committed is checked against them (`_kept`).

        PostgreSQL: the records table's lock comes first (`TABLE_FIRST`), as in a schema change
        whose indexes change before it holds the row: a write holding the row, then waiting for
        the table an index change holds, while the change waits for the row, was a deadlock.
        Then the partition's and the app's workspace rows (`datasets/holding.py`), in the same
        statement: a workspace's deletion waits for the write, or the write for it (404)."""
        await begin_as_writer(self.connection)
        stmt = select(Collection.fields, workspaces_held(partition, schema.app_id)).where(
            Collection.id == schema.id
        )
        if self.connection.dialect.name == "postgresql":
            stmt = stmt.add_cte(TABLE_FIRST).with_for_update(
                read=True, key_share=True, of=Collection
            )
        row = (await self.connection.execute(stmt)).first()
        if row is None:
            raise DatasetNotFoundError(f"Dataset '{schema.name}' no longer exists")
        fields, there = row
        if not there:
            raise PartitionGoneError()
        return field_kinds(fields)

    def _unheld(self, schema: CollectionSchema) -> Basis | None:
        """The collection as `schema` was loaded with it, when a write may be made conditional
        on its version instead of reading its fields under the lock first: SQLite, where the
        lock is the database's one write lock and the write's own statement checks the version
        (`_hold_fields` would read the fields too: one more hop to the driver's thread).
        PostgreSQL reads the fields with the row's lock in one statement anyway."""
        if self.connection.dialect.name != "sqlite":
            return None
        return schema.basis

    async def _held_row(
        self, schema: CollectionSchema, partition: str, record_id: str
    ) -> tuple[FieldKinds, Row[Any]]:
        """The collection's fields (`_hold_fields`) and the record, both under the lock. SQLite,
        with a schema that knows its collection's version: the record's read says the version
        too, and the fields are read only when it moved (or the record is not there)."""
        basis = self._unheld(schema)
        if basis is None:
            return await self._hold_fields(schema, partition), await self._row(
                schema, partition, record_id, lock=True
            )
        await begin_as_writer(self.connection)
        version = select(Collection.version).where(Collection.id == schema.id).scalar_subquery()
        row = await self._row(schema, partition, record_id, also=version, missing=False)
        if row is not None and row[-1] == basis.version:
            return basis.kinds, row
        fields = await self._hold_fields(schema, partition)  # the lock is held: no second BEGIN
        return fields, await self._row(schema, partition, record_id)

    @overload
    async def _row(
        self,
        schema: CollectionSchema,
        partition: str,
        record_id: str,
        *,
        lock: bool = False,
        also: ColumnElement[Any] | None = None,
    ) -> Row[Any]: ...

    @overload
    async def _row(
        self,
        schema: CollectionSchema,
        partition: str,
        record_id: str,
        *,
        lock: bool = False,
        also: ColumnElement[Any] | None = None,
        missing: Literal[False],
    ) -> Row[Any] | None: ...

    async def _row(
        self,
        schema: CollectionSchema,
        partition: str,
        record_id: str,
        *,
        lock: bool = False,
        also: ColumnElement[Any] | None = None,
        missing: bool = True,
    ) -> Row[Any] | None:
        """The record's row (`also`: one more column, last); 404 when absent, or None when not
        `missing`."""
        if not is_id(record_id):
            raise RecordNotFoundError()
        columns = (*_COLUMNS, Record.size) if also is None else (*_COLUMNS, Record.size, also)
        stmt = select(*columns).where(self.scope(schema, partition), Record.id == record_id)
        if lock:
            stmt = stmt.with_for_update()
        row = (await self.connection.execute(stmt)).first()
        if row is None and missing:
            raise RecordNotFoundError()
        return row

    async def _ensure_unique(
        self,
        schema: CollectionSchema,
        partition: str,
        data: Mapping[str, Any],
        exclude: str | None,
    ) -> None:
        errors = []
        for f in schema.fields:
            if not f.unique or data.get(f.name) is None:
                continue
            stmt = select(Record.id).where(
                self.scope(schema, partition),
                field_expression(self.connection.dialect, f) == data[f.name],
            )
            if exclude is not None:
                stmt = stmt.where(Record.id != exclude)
            if (await self.connection.execute(stmt.limit(1))).first() is not None:
                errors.append({"field": f.name, "message": "already exists"})
        if errors:
            raise _duplicate(errors)

    async def _write(self, schema: CollectionSchema, stmt: Any) -> int:
        try:
            result = await self.connection.execute(stmt)
        except IntegrityError as exc:
            refusal = _refusal(schema, exc)
            if refusal is None:  # NOT NULL, CHECK: a bug, never the caller's duplicate
                raise
            raise refusal from exc
        return int(result.rowcount)

    def _merge(
        self, schema: CollectionSchema, stored: Mapping[str, Any], patch: Mapping[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, str]]]:
        """Apply a validated patch to the stored document (ciphertexts stay as they are);
        defaults fill absent fields. Values of fields `schema` does not know are kept (see
        `_unknown`)."""
        merged = dict(stored)
        for name, value in self._encrypt(schema, patch).items():
            if value is None:
                merged.pop(name, None)
            else:
                merged[name] = value
        errors = []
        for f in schema.fields:
            if f.name in merged:
                continue
            if f.default is not None:
                merged.update(self._encrypt(schema, {f.name: f.default}))
            elif f.required:
                errors.append({"field": f.name, "message": "is required"})
        return merged, errors

    def _encrypt(self, schema: CollectionSchema, data: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(data)
        for f in schema.encrypted_fields:
            if out.get(f.name) is not None:
                out[f.name] = self.cipher.encrypt(out[f.name])
        return out

    def _metric(
        self, schema: CollectionSchema, op_name: str, field: str | None
    ) -> tuple[ColumnElement[Any], ...]:
        """The SQL of one metric: one column, or two for an exact integer sum on SQLite."""
        if op_name not in AGGREGATE_OPS:  # never let a name pick an arbitrary SQL function
            raise ValidationError(
                errors=[{"field": "metrics", "message": f"op must be one of {AGGREGATE_OPS}"}]
            )
        if op_name == "count":
            if field is None:
                return (func.count(),)
            return (func.count(self._metric_operand(schema, field, op_name)),)
        expression = self._metric_operand(schema, field, op_name)
        kind = self._type(schema, field or "")
        postgres = self.connection.dialect.name == "postgresql"
        if kind == "boolean" and op_name in ("min", "max") and postgres:
            # PostgreSQL has no min/max of booleans; false < true, as SQLite's 0 < 1 gives.
            return ((func.bool_and if op_name == "min" else func.bool_or)(expression),)
        if op_name == "sum" and not postgres:
            if kind == "number":
                # Summed as floats, like PostgreSQL's: never an integer overflow (and, unlike
                # total(), NULL when there is nothing to sum, as PostgreSQL's sum is).
                return (func.sum(cast(expression, Float)),)
            # SQLite's sum() fails once a 64-bit total overflows, even midway. Summing the high
            # and low 32-bit halves apart cannot overflow (2**31 rows would be needed), and
            # `_halves` puts them back together exactly (PostgreSQL sums bigint as numeric).
            return (func.sum(expression.op(">>")(32)), func.sum(expression.op("&")(_LOW_BITS)))
        aggregate: Any = getattr(func, op_name)  # sum, avg, min or max: checked above
        return (aggregate(expression),)

    def _metric_operand(
        self, schema: CollectionSchema, field: str | None, op_name: str
    ) -> ColumnElement[Any]:
        expression, _, _ = _sort_key(schema, field or "", self.connection.dialect)
        kind = self._type(schema, field or "")
        if op_name in ("sum", "avg") and kind not in ("integer", "number"):
            raise ValidationError(
                errors=[{"field": "metrics", "message": f"{op_name} needs a number field"}]
            )
        return expression

    @staticmethod
    def _type(schema: CollectionSchema, name: str) -> str:
        f = schema.field(name)
        return f.type if f is not None else BUILTIN_TYPES.get(name, "string")

    def _out(
        self, schema: CollectionSchema, row: Row[Any], fields: Sequence[str] | None
    ) -> dict[str, Any]:
        wanted = None if fields is None else frozenset(fields)
        record = self._render(
            schema, row.id, row.data, row.version, row.created_at, row.updated_at, wanted
        )
        if fields is None:
            return record
        return {"id": record["id"], **{name: record.get(name) for name in fields}}

    def _render(
        self,
        schema: CollectionSchema,
        record_id: str,
        stored: Mapping[str, Any],
        version: int,
        created: Any,
        updated: Any,
        wanted: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"id": record_id}
        for f in schema.fields:
            if wanted is not None and f.name not in wanted:
                continue  # a projection: never decrypt what will not be shown
            value = stored.get(f.name)
            if value is not None and f.encrypted:
                try:
                    value = self.cipher.decrypt(value)
                except DecryptionError:
                    # Key rotated or data tampered: the value is unreadable, never guessed.
                    log.warning("record_field_undecryptable", record=record_id, field=f.name)
                    value = None
            elif value is not None and f.type == "number":
                value = _shown_number(value)
            out[f.name] = value
        out["version"] = version
        out["createdTime"] = _stamp(created)
        out["updatedTime"] = _stamp(updated)
        return out


def _kept(
    schema: CollectionSchema,
    stored: dict[str, Any],
    fields: FieldKinds,
    before: Mapping[str, Any],
) -> dict[str, Any]:
    """`stored` as the collection's fields now (`fields`, read by `_hold_fields`) allow it to be
    written over `before` (the record's stored data; empty for an insert).

    A schema loaded before a field's removal committed would write a value the removal never
    erases, which a field of that name added later (of any type) would show: it is dropped. A
    published version's writes keep them, out of sight of the collection (docs/builder.md).
    A value written with a type or encryption the field no longer has is refused, whatever the
    schema (409 `schema_changed`): typed filters and sorts would fail on it, a read would not
    decrypt it or would show ciphertext. Values the write leaves as they were are not its."""
    stale = [
        name
        for name, kind in fields.items()
        if name in stored
        and (f := schema.field(name)) is not None
        and (f.type, f.encrypted) != kind
        and stored[name] != before.get(name)
    ]
    if stale:
        raise SchemaChangedError(stale)
    if schema.published or stored.keys() <= fields.keys():
        return stored
    return {k: v for k, v in stored.items() if k in fields}


def _at_version(collection_id: str, version: int, partition: str) -> ColumnElement[bool]:
    """A write's condition that the collection still has `version` (so the fields its schema
    was loaded with: `Basis`) and the partition's workspace is still there (a deletion of it
    committed since would leave the record behind: `datasets/holding.py`), evaluated by the
    writing statement, under its lock. When it fails, `_hold_fields` says why, or goes on."""
    return and_(
        exists().where(Collection.id == collection_id, Collection.version == version),
        exists().where(Workspace.id == partition),
    )


def _unknown(schema: CollectionSchema, stored: Mapping[str, Any]) -> dict[str, Any]:
    """The stored values of fields `schema` does not know. A published version writes with the
    fields it was published with: a field added since is not its to erase (its update would
    drop what later versions and `dev` wrote). Fields `dev` removed were erased then."""
    return {k: v for k, v in stored.items() if schema.field(k) is None}


def _shown_number(value: int | float) -> int | float:
    """A number field's value as every backend shows it. PostgreSQL's JSONB keeps numbers as
    decimals: -0.0 comes back as 0, and a whole double past 2**53 (JSON writes those from 1e16 on
    with an exponent) as the integer its shortest digits spell — 5.678214014312166e16 as
    56782140143121660, not the double's 56782140143121664 — where SQLite gives back the double.
    Integers past 2**53 are shown as the doubles they are (a number field holds no other), and
    -0.0 as 0.0."""
    if type(value) is int:
        return value if -_EXACT_INT <= value <= _EXACT_INT else float(value)
    return value + 0.0  # -0.0 + 0.0 is 0.0; any other double stays itself


def _refusal(schema: CollectionSchema, exc: IntegrityError) -> ApiforgeError | None:
    """The answer to a record write the database refused, or None when only a bug explains it.

    A unique index refuses a value a concurrent write took after `_ensure_unique` looked (409
    naming the field, as that check does). The one foreign key of `records` is its collection:
    it was deleted meanwhile — by the management API, or with its app, which another node's
    cached resolution (up to a second) or a published version still calls."""
    found = violation(exc)
    if found.kind == "unique":
        field = unique_field(schema, found.constraint)
        return _duplicate([{"field": field, "message": "already exists"}] if field else [])
    if found.kind == "foreign_key":
        return DatasetNotFoundError(f"Dataset '{schema.name}' no longer exists")
    return None


def _duplicate(errors: list[dict[str, str]]) -> ConflictError:
    return ConflictError(
        "A record with this value already exists",
        reason="duplicate_value",
        details={"errors": errors} if errors else None,
    )


def _size(stored: Mapping[str, Any]) -> int:
    size = len(orjson.dumps(stored))
    if size > MAX_RECORD_BYTES:
        raise PayloadTooLargeError(
            f"A record may hold at most {MAX_RECORD_BYTES} bytes",
            reason="record_too_large",
            details={"maxBytes": MAX_RECORD_BYTES},
        )
    return size


def _halves(high: Any, low: Any) -> int | None:
    """An integer sum from the sums of its values' high (signed) and low 32-bit halves."""
    return None if high is None else int(high) * 2**32 + int(low)


def _plain(value: Any, kind: str, op_name: str | None, field: str = "") -> Any:
    """Database aggregate values as JSON: Decimal -> int/float, SQLite 1/0 -> bool."""
    if value is None:
        return None
    if op_name in ("count",):
        return int(value)
    if op_name == "avg":
        return float(value)
    if kind == "boolean":
        return bool(value)
    if kind == "integer":
        whole = int(value)
        if op_name == "sum" and not INT_MIN <= whole <= INT_MAX:
            # Exact, but no later step could use it (integer fields, filters and expressions
            # hold 64 bits) and past 2**64 the JSON encoder cannot write it: refused alike on
            # both backends.
            raise ApiforgeError(
                f"The sum of {field!r} does not fit in 64 bits",
                reason="aggregate_overflow",
                status=422,
                details={"field": field},
            )
        return whole
    if kind == "number":
        number = float(value)
        if number.is_integer() and op_name != "avg" and INT_MIN <= number <= INT_MAX:
            return int(number)
        return number  # a whole float past 64 bits (1e20) stays one: JSON cannot write the int
    if kind == "datetime" and not isinstance(value, str):
        return iso(value)
    return value
