"""Step family: data — `getOne`, `getMany`, `count`, `aggregate`, `insert`, `update`, `delete`,
`upsert` over an app's collections.

Every data step reads and writes only the calling workspace's partition (`ctx.partition`) of its
collection, through `RecordStore` on the call's connection and transaction. What can be checked
when the API is saved is checked then: the collection exists, field names in filters, sorts,
projections, groupings and literal data are known, literal values have the field's type, sort
keys are sortable, `upsert`'s key is a unique field. Errors at call time carry the step id.
"""

import math
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from apiforge.core.errors import ApiforgeError
from apiforge.datasets.filtering import FilterValueError, record_filter
from apiforge.datasets.schema import CollectionSchema, coerce_value
from apiforge.datasets.sql import BUILTIN_TYPES
from apiforge.datasets.store import MAX_GROUPS, MAX_PAGE_SIZE, PreparedPage, RecordStore
from apiforge.engine.base import RunContext
from apiforge.engine.errors import step_error
from apiforge.engine.spec import StepSpec
from apiforge.engine.values import CompiledValue, is_expression

PAGE_COST_UNIT = 20  # getMany costs its price once per 20 records its page may hold
DEFAULT_PAGE_CAP = 100  # the page-size cap when `pageSize` is an expression and no cap is given
MAX_PAGE_NO = 1_000_000

FieldName = Annotated[str, Field(min_length=1, max_length=65)]
SortKeys = Annotated[list[FieldName], Field(max_length=8)]
FieldList = Annotated[list[FieldName], Field(max_length=100)]


# --- checks on save -----------------------------------------------------------------------------


def _known(schema: CollectionSchema, name: str) -> bool:
    return schema.field(name) is not None or name in BUILTIN_TYPES


def _check_fields(
    compiler: Any, schema: CollectionSchema, names: Sequence[str], where: str
) -> None:
    for i, name in enumerate(names):
        if not _known(schema, name):
            raise compiler.error(f"{where}.{i}", f"unknown field {name!r} of {schema.name}")


def _check_sort(compiler: Any, schema: CollectionSchema, keys: Sequence[str], where: str) -> None:
    for i, key in enumerate(keys):
        name = key[1:] if key.startswith("-") else key
        f = schema.field(name)
        if f is None and name not in BUILTIN_TYPES:
            raise compiler.error(f"{where}.{i}", f"unknown field {name!r} of {schema.name}")
        if f is not None and not f.sortable:
            raise compiler.error(
                f"{where}.{i}",
                f"cannot sort by {name!r} ({f.type}{', encrypted' if f.encrypted else ''})",
            )


def _check_data(
    compiler: Any, schema: CollectionSchema, raw: Any, where: str, *, complete: bool
) -> None:
    """A literal object (its values may be expressions): known fields, literal values typed, and
    with `complete` (an insert) every required field without a default present."""
    if is_expression(raw):
        return
    if not isinstance(raw, dict):
        raise compiler.error(where, "must be an object of field values or an expression")
    for name, value in raw.items():
        f = schema.field(name)
        if f is None:
            raise compiler.error(f"{where}.{name}", f"unknown field {name!r} of {schema.name}")
        if value is None or is_expression(value) or _holds_expression(value):
            continue
        _, problem = coerce_value(f, value)
        if problem:
            raise compiler.error(f"{where}.{name}", problem)
    if complete:
        for f in schema.fields:
            if f.required and f.default is None and f.name not in raw:
                raise compiler.error(where, f"required field {f.name!r} is missing")


def _holds_expression(value: Any) -> bool:
    if isinstance(value, dict):
        return is_expression(value) or any(_holds_expression(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_expression(v) for v in value)
    return False


# --- call-time helpers -------------------------------------------------------------------------


@asynccontextmanager
async def _attributed(step_id: str) -> AsyncIterator[None]:
    """Name the step in any refusal from the store (`data.stepId`)."""
    try:
        yield
    except ApiforgeError as exc:
        exc.details.setdefault("stepId", step_id)
        raise


def _store(ctx: RunContext) -> RecordStore:
    return RecordStore(ctx.connection, ctx.services.record_cipher)


def _where(step: Any, ctx: RunContext, variables: dict[str, Any]) -> Any:
    if step.filter is None:
        return None
    tree = step.filter.evaluate(variables)
    try:
        return record_filter(ctx.connection.dialect, step.schema, tree, "filter")
    except FilterValueError as exc:
        raise step_error(step.id, str(exc), reason="invalid_filter", field=exc.field) from None


def _record_id(step_id: str, value: Any, field: str = "recordId") -> str:
    if not isinstance(value, str) or not value:
        raise step_error(step_id, f"{field} must be a record id (a string)", field=field)
    return value


def _int(step_id: str, value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise step_error(
            step_id,
            f"{field} must be an integer from {low} to {high}",
            field=field,
            reason="invalid_page" if field in ("pageNo", "pageSize") else "step_failed",
        )
    return value


def _optional_version(step_id: str, value: Any) -> int | None:
    return None if value is None else _int(step_id, value, "version", 1, 2**31 - 1)


def _data(step_id: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise step_error(step_id, "data must be an object of field values", field="data")
    return value


def _filter_value(compiler: Any, raw: Any, schema: CollectionSchema) -> CompiledValue | None:
    return None if raw is None else compiler.filter(raw, schema, "filter")


class _DataSpec(StepSpec):
    collection: str = Field(min_length=1, max_length=64)


# --- getOne -------------------------------------------------------------------------------------


class GetOneSpec(_DataSpec):
    """`{"type": "getOne", "collection": "posts", "recordId": {"expr": "args.id"}}` or with
    `filter` (+ `sort`): the record, or null; `required: true` makes "none" a 404."""

    type: Literal["getOne"]
    record_id: Any = Field(default=None, alias="recordId")
    filter: Any = None
    sort: SortKeys = Field(default_factory=lambda: ["-createdTime"])
    fields: FieldList | None = None
    required: StrictBool = False

    def compile(self, compiler: Any) -> "GetOneStep":
        schema = compiler.collection(self.collection)
        if self.record_id is None and self.filter is None:
            raise compiler.error("recordId", "give recordId or filter")
        _check_sort(compiler, schema, self.sort, "sort")
        _check_fields(compiler, schema, self.fields or [], "fields")
        return GetOneStep(
            id=self.id,
            type=self.type,
            schema=schema,
            record_id=None
            if self.record_id is None
            else compiler.value(self.record_id, "recordId"),
            filter=_filter_value(compiler, self.filter, schema),
            sort=tuple(self.sort),
            fields=None if self.fields is None else tuple(self.fields),
            required=self.required,
        )


@dataclass(frozen=True, slots=True)
class GetOneStep:
    id: str
    type: str
    schema: CollectionSchema
    record_id: CompiledValue | None
    filter: CompiledValue | None
    sort: tuple[str, ...]
    fields: tuple[str, ...] | None
    required: bool

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {k: v for k, v in (("recordId", self.record_id), ("filter", self.filter)) if v}

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        variables = ctx.variables()
        record_id = (
            None
            if self.record_id is None
            else _record_id(self.id, self.record_id.evaluate(variables))
        )
        async with _attributed(self.id):
            record = await _store(ctx).get_one(
                self.schema,
                ctx.partition,
                record_id,
                where=_where(self, ctx, variables),
                sort=self.sort,
                fields=self.fields,
            )
        if record is None and self.required:
            raise step_error(self.id, "Record not found", reason="record_not_found", status=404)
        return record


# --- getMany ------------------------------------------------------------------------------------


class GetManySpec(_DataSpec):
    """`{"type": "getMany", "collection": "posts", "filter": {...}, "sort": ["-createdTime"],
    "pageNo": {"expr": "args.pageNo"}, "pageSize": 20, "fields": [...], "withTotal": true}` →
    `{"list", "pageNo", "pageSize", "totalCount", "totalPage"}`. The page size is capped by
    `maxPageSize` (default: a literal `pageSize`, else 100); the cap sets the step's cost."""

    type: Literal["getMany"]
    filter: Any = None
    sort: SortKeys = Field(default_factory=lambda: ["-createdTime"])
    page_no: Any = Field(default=1, alias="pageNo")
    page_size: Any = Field(default=20, alias="pageSize")
    max_page_size: StrictInt | None = Field(
        default=None, alias="maxPageSize", ge=1, le=MAX_PAGE_SIZE
    )
    fields: FieldList | None = None
    with_total: StrictBool = Field(default=True, alias="withTotal")

    def compile(self, compiler: Any) -> "GetManyStep":
        schema = compiler.collection(self.collection)
        _check_sort(compiler, schema, self.sort, "sort")
        _check_fields(compiler, schema, self.fields or [], "fields")
        page_size = compiler.value(self.page_size, "pageSize")
        if page_size.is_literal:
            literal = page_size.literal
            if isinstance(literal, bool) or not isinstance(literal, int):
                raise compiler.error("pageSize", "must be an integer or an expression")
            cap = self.max_page_size or literal
            if not 1 <= literal <= cap or literal > MAX_PAGE_SIZE:
                raise compiler.error("pageSize", f"must be from 1 to {min(cap, MAX_PAGE_SIZE)}")
        else:
            cap = self.max_page_size or DEFAULT_PAGE_CAP
        return GetManyStep(
            id=self.id,
            type=self.type,
            schema=schema,
            filter=_filter_value(compiler, self.filter, schema),
            sort=tuple(self.sort),
            page_no=compiler.value(self.page_no, "pageNo"),
            page_size=page_size,
            page_cap=cap,
            fields=None if self.fields is None else tuple(self.fields),
            with_total=self.with_total,
        )


@dataclass(frozen=True, slots=True)
class GetManyStep:
    id: str
    type: str
    schema: CollectionSchema
    filter: CompiledValue | None
    sort: tuple[str, ...]
    page_no: CompiledValue
    page_size: CompiledValue
    page_cap: int
    fields: tuple[str, ...] | None
    with_total: bool
    # Per dialect: the statements compiled once when the filter is constant (None: it is not,
    # or a constant needs bind processing). The step lives as long as its compiled version.
    prepared: dict[str, PreparedPage | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        shown = {"pageNo": self.page_no, "pageSize": self.page_size}
        return {**shown, "filter": self.filter} if self.filter else shown

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0) * math.ceil(self.page_cap / PAGE_COST_UNIT)

    async def run(self, ctx: RunContext) -> Any:
        variables = ctx.variables()
        page_no = _int(self.id, self.page_no.evaluate(variables), "pageNo", 1, MAX_PAGE_NO)
        page_size = _int(self.id, self.page_size.evaluate(variables), "pageSize", 1, self.page_cap)
        store = _store(ctx)
        prepared = self._prepared(ctx, store, variables)
        async with _attributed(self.id):
            if prepared is not None:
                return await prepared.run(store, ctx.partition, page_no, page_size)
            return await store.get_many(
                self.schema,
                ctx.partition,
                where=_where(self, ctx, variables),
                sort=self.sort,
                page_no=page_no,
                page_size=page_size,
                fields=self.fields,
                with_total=self.with_total,
            )

    def _prepared(
        self, ctx: RunContext, store: RecordStore, variables: dict[str, Any]
    ) -> PreparedPage | None:
        if self.filter is not None and not self.filter.is_literal:
            return None
        dialect = ctx.connection.dialect.name
        if dialect not in self.prepared:
            self.prepared[dialect] = store.prepare_page(
                self.schema,
                where=_where(self, ctx, variables),
                sort=self.sort,
                fields=self.fields,
                with_total=self.with_total,
            )
        return self.prepared[dialect]


# --- count, aggregate ---------------------------------------------------------------------------


class CountSpec(_DataSpec):
    """`{"type": "count", "collection": "posts", "filter": {...}}` → an integer."""

    type: Literal["count"]
    filter: Any = None

    def compile(self, compiler: Any) -> "CountStep":
        schema = compiler.collection(self.collection)
        return CountStep(self.id, self.type, schema, _filter_value(compiler, self.filter, schema))


@dataclass(frozen=True, slots=True)
class CountStep:
    id: str
    type: str
    schema: CollectionSchema
    filter: CompiledValue | None

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"filter": self.filter} if self.filter else {}

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        where = _where(self, ctx, ctx.variables())
        async with _attributed(self.id):
            return await _store(ctx).count(self.schema, ctx.partition, where)


class Metric(BaseModel):
    """One aggregate output: `{"op": "sum", "field": "views"}` (`count` needs no field)."""

    model_config = ConfigDict(extra="forbid")
    op: Literal["count", "sum", "avg", "min", "max"]
    field: FieldName | None = None


class AggregateSpec(_DataSpec):
    """`{"type": "aggregate", "collection": "posts", "filter": {...}, "groupBy": ["published"],
    "metrics": {"n": {"op": "count"}, "views": {"op": "sum", "field": "views"}}, "limit": 100}`
    → `[{"published": true, "n": 2, "views": 30}, ...]`, ordered by the groups."""

    type: Literal["aggregate"]
    filter: Any = None
    group_by: Annotated[list[FieldName], Field(max_length=5)] = Field(
        default_factory=list, alias="groupBy"
    )
    metrics: Annotated[dict[FieldName, Metric], Field(min_length=1, max_length=20)]
    limit: StrictInt = Field(default=100, ge=1, le=MAX_GROUPS)

    def compile(self, compiler: Any) -> "AggregateStep":
        schema = compiler.collection(self.collection)
        _check_sort(compiler, schema, self.group_by, "groupBy")
        for name, metric in self.metrics.items():
            if name in self.group_by:
                raise compiler.error(f"metrics.{name}", "clashes with a groupBy field")
            if metric.field is None:
                if metric.op != "count":
                    raise compiler.error(f"metrics.{name}.field", f"{metric.op} needs a field")
                continue
            _check_sort(compiler, schema, [metric.field], f"metrics.{name}.field")
            kind = f.type if (f := schema.field(metric.field)) else BUILTIN_TYPES[metric.field]
            if metric.op in ("sum", "avg") and kind not in ("integer", "number"):
                raise compiler.error(f"metrics.{name}.field", f"{metric.op} needs a number field")
        return AggregateStep(
            id=self.id,
            type=self.type,
            schema=schema,
            filter=_filter_value(compiler, self.filter, schema),
            group_by=tuple(self.group_by),
            metrics={name: (m.op, m.field) for name, m in self.metrics.items()},
            limit=self.limit,
        )


@dataclass(frozen=True, slots=True)
class AggregateStep:
    id: str
    type: str
    schema: CollectionSchema
    filter: CompiledValue | None
    group_by: tuple[str, ...]
    metrics: dict[str, tuple[str, str | None]]
    limit: int

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"filter": self.filter} if self.filter else {}

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        where = _where(self, ctx, ctx.variables())
        async with _attributed(self.id):
            return await _store(ctx).aggregate(
                self.schema,
                ctx.partition,
                where=where,
                group_by=self.group_by,
                metrics=self.metrics,
                limit=self.limit,
            )


# --- insert, update, delete, upsert -------------------------------------------------------------


class InsertSpec(_DataSpec):
    """`{"type": "insert", "collection": "posts", "data": {"title": {"expr": "args.title"}}}`
    → the new record (with `id`, `version` 1, times)."""

    type: Literal["insert"]
    data: Any

    def compile(self, compiler: Any) -> "InsertStep":
        schema = compiler.collection(self.collection)
        _check_data(compiler, schema, self.data, "data", complete=True)
        return InsertStep(self.id, self.type, schema, compiler.value(self.data, "data"))


@dataclass(frozen=True, slots=True)
class InsertStep:
    id: str
    type: str
    schema: CollectionSchema
    data: CompiledValue

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"data": self.data}

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        data = _data(self.id, self.data.resolve(ctx))
        async with _attributed(self.id):
            return await _store(ctx).insert(self.schema, ctx.partition, data)


class UpdateSpec(_DataSpec):
    """`{"type": "update", "collection": "posts", "recordId": {"expr": "args.id"},
    "version": {"expr": "args.version"}, "data": {...}, "replace": false}` → the updated record.
    With `version`, a record changed since that version is a 409 `version_conflict`."""

    type: Literal["update"]
    record_id: Any = Field(alias="recordId")
    data: Any
    version: Any = None
    replace: StrictBool = False

    def compile(self, compiler: Any) -> "UpdateStep":
        schema = compiler.collection(self.collection)
        _check_data(compiler, schema, self.data, "data", complete=self.replace)
        return UpdateStep(
            id=self.id,
            type=self.type,
            schema=schema,
            record_id=compiler.value(self.record_id, "recordId"),
            data=compiler.value(self.data, "data"),
            version=compiler.value(self.version, "version"),
            replace=self.replace,
        )


@dataclass(frozen=True, slots=True)
class UpdateStep:
    id: str
    type: str
    schema: CollectionSchema
    record_id: CompiledValue
    data: CompiledValue
    version: CompiledValue
    replace: bool

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"recordId": self.record_id, "version": self.version, "data": self.data}

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        variables = ctx.variables()
        record_id = _record_id(self.id, self.record_id.evaluate(variables))
        version = _optional_version(self.id, self.version.evaluate(variables))
        data = _data(self.id, self.data.evaluate(variables))
        async with _attributed(self.id):
            return await _store(ctx).update(
                self.schema, ctx.partition, record_id, data, version=version, replace=self.replace
            )


class DeleteSpec(_DataSpec):
    """`{"type": "delete", "collection": "posts", "recordId": {"expr": "args.id"}}` →
    `{"id", "deleted": true}`; a missing record is a 404 unless `required` is false."""

    type: Literal["delete"]
    record_id: Any = Field(alias="recordId")
    version: Any = None
    required: StrictBool = True

    def compile(self, compiler: Any) -> "DeleteStep":
        schema = compiler.collection(self.collection)
        return DeleteStep(
            id=self.id,
            type=self.type,
            schema=schema,
            record_id=compiler.value(self.record_id, "recordId"),
            version=compiler.value(self.version, "version"),
            required=self.required,
        )


@dataclass(frozen=True, slots=True)
class DeleteStep:
    id: str
    type: str
    schema: CollectionSchema
    record_id: CompiledValue
    version: CompiledValue
    required: bool

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"recordId": self.record_id, "version": self.version}

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        variables = ctx.variables()
        record_id = _record_id(self.id, self.record_id.evaluate(variables))
        version = _optional_version(self.id, self.version.evaluate(variables))
        try:
            async with _attributed(self.id):
                await _store(ctx).delete(self.schema, ctx.partition, record_id, version=version)
        except ApiforgeError as exc:
            if exc.reason == "record_not_found" and not self.required:
                return {"id": record_id, "deleted": False}
            raise
        return {"id": record_id, "deleted": True}


class UpsertSpec(_DataSpec):
    """`{"type": "upsert", "collection": "users", "on": "email", "data": {...}}`: update the
    record whose unique field `on` equals `data[on]`, else insert one → the record."""

    type: Literal["upsert"]
    on: FieldName
    data: Any

    def compile(self, compiler: Any) -> "UpsertStep":
        schema = compiler.collection(self.collection)
        f = schema.field(self.on)
        if f is None or not f.unique:
            raise compiler.error("on", "must be a unique field of the collection")
        _check_data(compiler, schema, self.data, "data", complete=False)
        if (
            isinstance(self.data, dict)
            and not is_expression(self.data)
            and self.on not in self.data
        ):
            raise compiler.error("data", f"must hold the key field {self.on!r}")
        return UpsertStep(self.id, self.type, schema, self.on, compiler.value(self.data, "data"))


@dataclass(frozen=True, slots=True)
class UpsertStep:
    id: str
    type: str
    schema: CollectionSchema
    on: str
    data: CompiledValue

    @property
    def inputs(self) -> dict[str, CompiledValue]:
        return {"data": self.data}

    def cost(self, prices: Mapping[str, int]) -> int:
        return prices.get(self.type, 0)

    async def run(self, ctx: RunContext) -> Any:
        data = _data(self.id, self.data.resolve(ctx))
        async with _attributed(self.id):
            record, _ = await _store(ctx).upsert(self.schema, ctx.partition, self.on, data)
        return record


STEPS: dict[str, type[StepSpec]] = {
    "getOne": GetOneSpec,
    "getMany": GetManySpec,
    "count": CountSpec,
    "aggregate": AggregateSpec,
    "insert": InsertSpec,
    "update": UpdateSpec,
    "delete": DeleteSpec,
    "upsert": UpsertSpec,
}
