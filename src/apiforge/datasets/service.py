"""Collections of an app (definitions) and their records, for the management API.

Both services act in the caller's current workspace: a collection is visible only when its app
belongs to that workspace (anything else is the same 404), and records are read and written in
that workspace's partition — the partition the app's `dev` calls use. Role rules live here:
viewers read, editors and above change definitions and records.
"""

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import bindparam, delete, func, literal, literal_column, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from apiforge.builder.definitions import DefinitionChecker
from apiforge.builder.models import App, AppVersion
from apiforge.builder.service import find_app
from apiforge.core.db import SessionEnd, after_commit, lock_rows
from apiforge.core.errors import ConflictError, NotFoundError, ValidationError
from apiforge.core.integrity import violation
from apiforge.datasets.crypto import FieldCipher
from apiforge.datasets.filtering import FilterValueError, record_filter
from apiforge.datasets.models import Collection, Record
from apiforge.datasets.published import removal_conflicts
from apiforge.datasets.schema import CollectionSchema, FieldSchema, validate_fields
from apiforge.datasets.schemas import DatasetCreate, DatasetRead, DatasetUpdate, FieldDef, FieldRead
from apiforge.datasets.sql import (
    changed_values_error,
    collection_predicate,
    drop_indexes,
    field_expression,
    sync_indexes,
)
from apiforge.datasets.store import DatasetNotFoundError, RecordStore
from apiforge.engine.base import CALL_LIMITS, limit_exceeded
from apiforge.http.pagination import Page, PageParams, fetch_page, order_by
from apiforge.http.schemas import Created
from apiforge.idempotency.locking import (
    NO_PRECONDITION,
    Precondition,
    PreconditionRequiredError,
    advance,
)
from apiforge.tools.filters import icontains
from apiforge.tools.ids import is_id
from apiforge.workspaces.models import Role
from apiforge.workspaces.service import CurrentWorkspace

DATASET_SORTS: dict[str, ColumnElement[Any]] = {
    "name": Collection.name.expression,
    "createdTime": Collection.created_at.expression,
    "updatedTime": Collection.updated_at.expression,
}
MAX_FILTER_BYTES = 16 * 1024
_ERASE_BATCH = 500  # records a removed field is erased from per statement


def schema_of(collection: Collection) -> CollectionSchema:
    return CollectionSchema.build(
        id=collection.id,
        app_id=collection.app_id,
        name=collection.name,
        fields=collection.fields,
        version=collection.version,
    )


def _field_schemas(fields: Sequence[FieldDef]) -> list[FieldSchema]:
    defs = [FieldSchema(**f.model_dump()) for f in fields]
    errors = validate_fields(defs)
    if errors:
        raise ValidationError("Invalid fields", errors=errors, reason="invalid_fields")
    return defs


def _read(collection: Collection) -> DatasetRead:
    return DatasetRead(
        id=collection.id,
        app_id=collection.app_id,
        name=collection.name,
        description=collection.description,
        fields=[FieldRead.model_validate(f) for f in collection.fields],
        version=collection.version,
        created_time=collection.created_at,
        updated_time=collection.updated_at,
    )


def _name_taken() -> ConflictError:
    return ConflictError(
        "The app already has a dataset of this name",
        reason="dataset_name_taken",
        details={"errors": [{"field": "name", "message": "already exists in this app"}]},
    )


def _app_not_found() -> NotFoundError:
    return NotFoundError("App not found", reason="app_not_found")


async def _collection(session: AsyncSession, workspace_id: str, dataset_id: str) -> Collection:
    """The collection if its app belongs to the workspace; else the one 404 for every case."""
    if not is_id(dataset_id):
        raise DatasetNotFoundError()
    collection = await session.scalar(
        select(Collection)
        .join(App, App.id == Collection.app_id)
        .where(Collection.id == dataset_id, App.workspace_id == workspace_id)
    )
    if collection is None:
        raise DatasetNotFoundError()
    return collection


class CollectionInUseError(ConflictError):
    reason = "collection_in_use"
    message = (
        "Other workspaces keep records in this collection (the app's subscribers); deleting it "
        "deletes theirs too: delete with force=true"
    )


class CollectionService:
    """Collection definitions of the current workspace's apps. Never commits."""

    def __init__(
        self,
        session: AsyncSession,
        collections_changed: Callable[[str], None] = lambda app_id: None,
    ) -> None:
        self.session = session
        # The gateway's cached published versions read their collections' versions again.
        self.collections_changed = collections_changed

    async def list(
        self,
        current: CurrentWorkspace,
        params: PageParams,
        app_id: str | None = None,
        q: str | None = None,
    ) -> Page[DatasetRead]:
        stmt = (
            select(Collection)
            .join(App, App.id == Collection.app_id)
            .where(App.workspace_id == current.id)
        )
        if app_id:
            stmt = stmt.where(Collection.app_id == app_id)
        if q:
            stmt = stmt.where(icontains(Collection.name, q))
        stmt = order_by(
            stmt,
            params,
            DATASET_SORTS,
            default="name",
            tiebreak=Collection.id.expression,
            default_order="asc",
        )
        rows, total = await fetch_page(self.session, stmt, params)
        return params.page([_read(c) for c in rows], total)

    async def create(self, current: CurrentWorkspace, data: DatasetCreate) -> Created:
        current.require(Role.EDITOR)
        await find_app(
            self.session, current.id, data.app_id, lock=True, referable=True
        )  # _reprice_callers
        fields = _field_schemas(data.fields)
        await self._ensure_name_free(data.app_id, data.name, None)
        collection = Collection(
            app_id=data.app_id,
            name=data.name,
            description=data.description,
            fields=[f.to_dict() for f in fields],
        )
        self.session.add(collection)
        await self._flush_name()
        await sync_indexes(await self.session.connection(), schema_of(collection))
        await self._reprice_callers(data.app_id)
        return Created(id=collection.id)

    async def get(self, current: CurrentWorkspace, dataset_id: str) -> DatasetRead:
        return _read(await _collection(self.session, current.id, dataset_id))

    async def update(
        self,
        current: CurrentWorkspace,
        dataset_id: str,
        data: DatasetUpdate,
        precondition: Precondition = NO_PRECONDITION,
        *,
        force: bool = False,
    ) -> DatasetRead:
        """Replace name, description and fields. A field's type or encryption cannot change
        while records hold values for it (409); a removed field's values are erased from every
        record, so a later field of that name never sees stale data of another type. Removing
        a field a published, non-deprecated version names is 409 `field_in_published_version`;
        one whose values other workspaces (the app's subscribers) keep is 409 `field_in_use`
        unless `force`, as deleting the collection. Replacing a schema needs `If-Match` (428
        without): a stale editor would drop fields."""
        current.require(Role.EDITOR)
        collection = await _collection(self.session, current.id, dataset_id)
        await find_app(
            self.session, current.id, collection.app_id, lock=True, referable=True
        )  # _reprice_callers
        advance(collection, precondition, required=True)
        fields = _field_schemas(data.fields)
        if data.name != collection.name:
            await self._ensure_name_free(collection.app_id, data.name, collection.id)
        connection = await self.session.connection()
        old = schema_of(collection)
        new_names = {f.name for f in fields}
        changed = [
            f.name
            for f in fields
            if (before := old.field(f.name)) is not None
            and (before.type, before.encrypted) != (f.type, f.encrypted)
        ]
        # A first look before the indexes are built: one over values of the old type would fail.
        await self._refuse_changed_values(connection, old.id, changed)
        conflicts = []
        published = await self._published_reads(collection)
        for f in fields:
            reads = published.get(f.name, {})
            other = next((v for kind, v in reads.items() if kind != (f.type, f.encrypted)), None)
            if other is not None:
                conflicts.append(
                    {
                        "field": f.name,
                        "message": f"published version {other} reads this field with another "
                        "type or encryption; give the new field another name",
                    }
                )
        # A changed field's values would reach that version's filters and casts as the old type
        # (a cast error on PostgreSQL, a loose comparison on SQLite); its filters on a removed
        # field would silently find nothing.
        removed = [f.name for f in old.fields if f.name not in new_names]
        if removed:  # as a publish or an undeprecation does: neither passes its check unseen
            await find_app(self.session, current.id, old.app_id, lock=True, referable=True)
        conflicts += await removal_conflicts(self.session, old.app_id, old.id, removed)
        if conflicts:
            raise ConflictError(
                "A published version uses a changed or removed field",
                reason="field_in_published_version",
                details={"errors": conflicts},
            )
        new = CollectionSchema.build(
            id=old.id, app_id=old.app_id, name=data.name, fields=[f.to_dict() for f in fields]
        )
        # Before the row lock, as `delete`: an index change waits for every record writer, and
        # a writer holding the records table may wait for the row.
        await sync_indexes(connection, new)
        if removed or changed:  # record writers hold the row (`RecordStore._hold_fields`):
            await self._hold(collection)  # none in flight while values are looked for and erased
            # The look that counts: a write that landed since the first is seen; a later one
            # with the old schema is refused (409 `schema_changed`).
            await self._refuse_changed_values(connection, old.id, changed)
        kept = [
            {
                "field": name,
                "message": "other workspaces (the app's subscribers) keep values of it; "
                "removing it erases theirs too: save with force=true",
            }
            for name in removed
            if not force and await self._has_values(connection, old.id, name, other_than=current.id)
        ]
        if kept:
            raise ConflictError(
                "Other workspaces keep values of a removed field",
                reason="field_in_use",
                details={"errors": kept},
            )
        for name in removed:
            await self._erase(connection, old.id, name)
        collection.name = data.name
        collection.description = data.description
        collection.fields = [f.to_dict() for f in fields]
        await self._flush_name()
        await self._reprice_callers(old.app_id)
        await self.session.refresh(collection)
        after_commit(self.session, lambda: self.collections_changed(old.app_id))
        return _read(collection)

    async def delete(
        self,
        current: CurrentWorkspace,
        dataset_id: str,
        precondition: Precondition = NO_PRECONDITION,
        *,
        force: bool = False,
    ) -> None:
        """The collection and every record of it, in every workspace's partition. `If-Match`
        is checked (412) and the ORM's DELETE is conditional on the version checked. Records
        other workspaces keep in it (the app's subscribers') are theirs: 409
        `collection_in_use` unless `force`, as deleting the app itself."""
        current.require(Role.EDITOR)
        collection = await _collection(self.session, current.id, dataset_id)
        precondition.check(collection.version)
        # One schema change of the app at a time, as `update`: neither holds the collection's
        # row while waiting for the records table the other holds.
        await find_app(self.session, current.id, collection.app_id, lock=True, referable=True)
        connection = await self.session.connection()
        # Before the row lock: dropping an index waits for every record writer, and an insert
        # into this collection waits for the row (its foreign key) while holding the table.
        await drop_indexes(connection, collection.id)
        await self._hold(collection)
        if not force:
            await self._ensure_unshared(connection, collection, current.id)
        await connection.execute(delete(Record).where(collection_predicate(collection.id)))
        await self.session.delete(collection)
        await self.session.flush()
        # Callees reading it now run nothing: never refused, whatever prices did since.
        await self._reprice_callers(collection.app_id, refuse_over_limit=False)
        app_id = collection.app_id
        after_commit(self.session, lambda: self.collections_changed(app_id))

    async def _hold(self, collection: Collection) -> None:
        """Hold the collection's row until commit, so that no record lands in it between a look
        at its records and the writes that rely on it: a no-op UPDATE takes SQLite's write lock;
        `FOR UPDATE` waits out PostgreSQL transactions inserting a record (their foreign key
        holds the row `FOR KEY SHARE`), and later inserts wait, then find no collection (404).
        404 when it went meanwhile."""
        await lock_rows(self.session, Collection, Collection.id == collection.id)
        held = await self.session.scalar(
            select(Collection.id).where(Collection.id == collection.id).with_for_update()
        )
        if held is None:
            raise DatasetNotFoundError()

    @staticmethod
    async def _ensure_unshared(
        connection: AsyncConnection, collection: Collection, workspace_id: str
    ) -> None:
        """409 `collection_in_use` while workspaces other than `workspace_id` (the app's
        subscribers) keep records in the collection (`_hold` first: none can land unseen)."""
        others = await connection.scalar(
            select(Record.partition)
            .where(collection_predicate(collection.id), Record.partition != workspace_id)
            .limit(1)
        )
        if others is not None:
            raise CollectionInUseError()

    async def _reprice_callers(self, app_id: str, *, refuse_over_limit: bool = True) -> None:
        """A callee's steps run (or fail) with the app's collections: its `dev` callers are
        priced again (a wrapper saved while its callee's collection was missing ran the callee
        unpaid once the collection was back). A change that can make a callee run takes the
        app's lock first, as API saves do, so neither prices with a stale view of the other."""
        checker = DefinitionChecker(self.session)
        await checker.reprice_callers(app_id, None, refuse_over_limit=refuse_over_limit)

    async def _ensure_name_free(self, app_id: str, name: str, own_id: str | None) -> None:
        stmt = select(Collection.id).where(Collection.app_id == app_id, Collection.name == name)
        existing = await self.session.scalar(stmt)
        if existing is not None and existing != own_id:
            raise _name_taken()

    async def _flush_name(self) -> None:
        try:
            await self.session.flush()
        except IntegrityError as exc:
            kind = violation(exc).kind
            if kind == "unique":  # a concurrent save took the name between check and flush
                raise _name_taken() from None
            if kind == "foreign_key":  # the app was deleted since it was checked
                raise _app_not_found() from None
            raise

    async def _published_reads(
        self, collection: Collection
    ) -> dict[str, dict[tuple[str, bool], str]]:
        """How the app's published versions read this collection's fields: name -> {(type,
        encrypted): a version that reads it so}. Fields removed since are in it too."""
        rows = await self.session.execute(
            select(AppVersion.version, AppVersion.snapshot).where(
                AppVersion.app_id == collection.app_id
            )
        )
        reads: dict[str, dict[tuple[str, bool], str]] = {}
        for version, snapshot in rows:
            for schema in (snapshot or {}).get("collections", {}).values():
                if schema.get("id") != collection.id:
                    continue
                for f in schema.get("fields", []):
                    kind = (str(f.get("type")), bool(f.get("encrypted")))
                    reads.setdefault(str(f.get("name")), {}).setdefault(kind, str(version))
        return reads

    @classmethod
    async def _refuse_changed_values(
        cls, connection: AsyncConnection, collection_id: str, changed: Sequence[str]
    ) -> None:
        """409 `field_has_values` when records hold values of fields whose type or encryption
        changes: they would be of the old kind."""
        held = [name for name in changed if await cls._has_values(connection, collection_id, name)]
        if held:
            raise changed_values_error(held)

    @staticmethod
    async def _has_values(
        connection: AsyncConnection, collection_id: str, name: str, *, other_than: str | None = None
    ) -> bool:
        """Whether any record (outside partition `other_than`, when given) holds a value."""
        # Read the field as text: no cast that values of the old type could make fail.
        raw = field_expression(connection.dialect, FieldSchema(name=name, type="string"))
        stmt = select(Record.id).where(collection_predicate(collection_id), raw.is_not(None))
        if other_than is not None:
            stmt = stmt.where(Record.partition != other_than)
        return (await connection.execute(stmt.limit(1))).first() is not None

    @staticmethod
    async def _erase(connection: AsyncConnection, collection_id: str, name: str) -> None:
        """Drop field `name` from every record holding it (a value or JSON null), and measure
        each record again: `size` is what the `storageBytes` quota counts, as a write measures
        it (`store._size`).
        In batches by id; PostgreSQL locks each batch (a concurrent write then reads the erased
        record), SQLite's writer lock is held already (the app's lock)."""
        data: ColumnElement[Any] = literal_column("data")
        held = (  # the key is there, also holding JSON null (`name` is a checked identifier)
            data.op("?")(literal(name))
            if connection.dialect.name == "postgresql"
            else func.json_type(data, literal_column(f"'$.{name}'")).is_not(None)
        )
        erase = (
            update(Record)
            .where(Record.id == bindparam("_id"))
            .values(data=bindparam("_data", type_=Record.data.type), size=bindparam("_size"))
        )
        last = ""
        while True:
            batch = (
                select(Record.id, Record.data)
                .where(collection_predicate(collection_id), held, Record.id > last)
                .order_by(Record.id)
                .limit(_ERASE_BATCH)
            )
            if connection.dialect.name == "postgresql":
                batch = batch.with_for_update()
            rows = (await connection.execute(batch)).all()
            if not rows:
                return
            values = []
            for record_id, data in rows:
                kept = {k: v for k, v in data.items() if k != name}
                values.append({"_id": record_id, "_data": kept, "_size": len(orjson.dumps(kept))})
            await connection.execute(erase, values)
            last = rows[-1].id


class RecordService:
    """Records of one collection in the current workspace's partition. Never commits."""

    # A read the caller shapes (filter, sort, count) gets a gateway call's time: an expensive
    # filter on a large collection would otherwise hold a pooled connection (8 on SQLite, pool
    # and overflow) for as long as it runs, and every tenant's requests would wait for one.
    time_budget: float = CALL_LIMITS.time_budget_seconds

    def __init__(self, session: AsyncSession, cipher: FieldCipher) -> None:
        self.session = session
        self.cipher = cipher

    async def _open(
        self, current: CurrentWorkspace, dataset_id: str, minimum: Role = Role.VIEWER
    ) -> tuple[RecordStore, CollectionSchema]:
        current.require(minimum)
        collection = await _collection(self.session, current.id, dataset_id)
        connection = await self.session.connection()
        store = RecordStore(connection, self.cipher, ends=SessionEnd(self.session))
        return store, schema_of(collection)

    async def list(
        self,
        current: CurrentWorkspace,
        dataset_id: str,
        params: PageParams,
        filter_json: str | None,
        fields: str | None,
    ) -> Page[dict[str, Any]]:
        store, schema = await self._open(current, dataset_id)
        where = None
        if filter_json:
            if len(filter_json) > MAX_FILTER_BYTES:
                raise ValidationError(
                    errors=[{"field": "filter", "message": "is too long"}], reason="invalid_filter"
                )
            try:
                tree = orjson.loads(filter_json)
            except orjson.JSONDecodeError:
                raise ValidationError(
                    errors=[{"field": "filter", "message": "is not valid JSON"}],
                    reason="invalid_filter",
                ) from None
            try:
                where = record_filter(store.connection.dialect, schema, tree, "filter")
            except FilterValueError as exc:
                raise ValidationError(
                    "Invalid filter",
                    errors=[{"field": exc.field, "message": str(exc)}],
                    reason="invalid_filter",
                ) from None
        projection = _projection(schema, fields)
        key = params.sort or "createdTime"
        if key.startswith("-"):  # the steps' "descending" spelling: here `order` says that
            raise ValidationError(
                errors=[{"field": "sort", "message": f"cannot sort by {key!r}"}],
                reason="invalid_sort_field",
            )
        direction = params.order or ("desc" if params.sort is None else "asc")
        # Cancelling the read stops its statement (interrupted on SQLite by `core.db`, cancelled
        # at the server by asyncpg), so the connection is free for the next request at once.
        budget = asyncio.timeout(self.time_budget)
        try:
            async with budget:
                page = await store.get_many(
                    schema,
                    current.id,
                    where=where,
                    sort=[f"-{key}" if direction == "desc" else key],
                    page_no=params.page_no,
                    page_size=params.page_size,
                    fields=projection,
                )
        except TimeoutError:
            if not budget.expired():
                raise
            raise limit_exceeded(
                "time", self.time_budget, f"The read ran longer than {self.time_budget:g} s"
            ) from None
        return params.page(page["list"], page["totalCount"])

    async def create(
        self, current: CurrentWorkspace, dataset_id: str, data: dict[str, Any]
    ) -> Created:
        store, schema = await self._open(current, dataset_id, Role.EDITOR)
        record = await store.insert(schema, current.id, data)
        return Created(id=record["id"])

    async def get(
        self, current: CurrentWorkspace, dataset_id: str, record_id: str
    ) -> dict[str, Any]:
        store, schema = await self._open(current, dataset_id)
        record = await store.get_one(schema, current.id, record_id)
        if record is None:
            raise NotFoundError("Record not found", reason="record_not_found")
        return record

    async def update(
        self,
        current: CurrentWorkspace,
        dataset_id: str,
        record_id: str,
        data: dict[str, Any],
        *,
        replace: bool,
        precondition: Precondition = NO_PRECONDITION,
    ) -> dict[str, Any]:
        """PUT (`replace`) or PATCH; a `version` key in the body and `If-Match` are the
        optimistic lock: each given one must name the current version (a stale `If-Match` is
        412, a stale body `version` 409 `version_conflict`). A PUT needs one of them (428): a
        replacement built from a stale read would erase fields written since."""
        store, schema = await self._open(current, dataset_id, Role.EDITOR)
        body = dict(data)
        version = _version(body.pop("version", None))
        if not precondition.given and replace and version is None:
            if await store.get_one(schema, current.id, record_id) is None:
                raise NotFoundError("Record not found", reason="record_not_found")
            raise PreconditionRequiredError(
                "Replacing a record needs If-Match (or a `version` in the body)"
            )
        version = await _expected(store, schema, current.id, record_id, version, precondition)
        return await store.update(
            schema, current.id, record_id, body, version=version, replace=replace
        )

    async def delete(
        self,
        current: CurrentWorkspace,
        dataset_id: str,
        record_id: str,
        version: int | None,
        precondition: Precondition = NO_PRECONDITION,
    ) -> None:
        """The `version` query parameter and `If-Match` lock as in `update` (409 / 412)."""
        store, schema = await self._open(current, dataset_id, Role.EDITOR)
        version = await _expected(store, schema, current.id, record_id, version, precondition)
        await store.delete(schema, current.id, record_id, version=version)


async def _expected(
    store: RecordStore,
    schema: CollectionSchema,
    partition: str,
    record_id: str,
    version: int | None,
    precondition: Precondition,
) -> int | None:
    """The version a record write must find, its statement conditional on it: the caller's
    `version` (body or query) once `If-Match` holds (412 if not), else the one `If-Match`
    matched (a write between this read and the statement is 409 `version_conflict`)."""
    if not precondition.given:
        return version
    found = await store.get_one(schema, partition, record_id)
    if found is None:
        raise NotFoundError("Record not found", reason="record_not_found")
    current = int(found["version"])
    precondition.check(current)
    if version is not None or precondition.wildcard:
        return version
    return current


def _version(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise ValidationError(
            errors=[{"field": "version", "message": "must be a positive integer"}]
        )
    return raw


def _projection(schema: CollectionSchema, fields: str | None) -> list[str] | None:
    if not fields:
        return None
    names = [name.strip() for name in fields.split(",") if name.strip()]
    builtin = ("version", "createdTime", "updatedTime", "id")
    unknown = [n for n in names if schema.field(n) is None and n not in builtin]
    if unknown:
        raise ValidationError(
            errors=[{"field": "fields", "message": f"unknown field '{unknown[0]}'"}]
        )
    return [n for n in names if n != "id"]
