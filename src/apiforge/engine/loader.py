"""Finds the compiled plan of `(app, api, version)` for a call, compiling as rarely as possible.

Published versions are immutable, so their compiled APIs are cached in-process by
`(app_id, version)` for the life of the process (bounded LRU). The collections they write are
not: each entry holds their `version`s (`Basis`, what lets a SQLite write skip reading the
fields) and reads them again at most once every `TARGET_TTL` — at once after this process saved
one of the app's datasets (`forget_collections`). What can change — the app's owner,
env, `latest`, a version's `deprecated` flag and sunset — is read in one query and kept for at most
`TARGET_TTL` seconds and read again ahead of its expiry, like API keys (`core/cache.py`): a change
made through this process is seen at once (`forget_app`), one made on another node within a
second. `dev` is compiled again only when the API's row or one of the app's collections changed
since the cached compile. Everything here is SQLAlchemy Core: no ORM session on the call path.
"""

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from sqlalchemy import Row, and_, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.builder.models import ApiDefinition, App, AppVersion, StepPrice
from apiforge.core.cache import RefreshingCache
from apiforge.core.errors import NotFoundError
from apiforge.datasets.models import Collection
from apiforge.datasets.schema import CollectionSchema
from apiforge.engine.compiler import CompiledApi, compile_api
from apiforge.tools.ids import is_id

# Seconds a resolved (app, version) — and a published version's collection versions — are
# trusted without reading them again.
TARGET_TTL = 1.0


class AppNotFoundError(NotFoundError):
    reason = "app_not_found"
    message = "App not found"


class ApiNotFoundError(NotFoundError):
    reason = "api_not_found"
    message = "API not found"


class VersionNotFoundError(NotFoundError):
    reason = "version_not_found"
    message = "Version not found"


@dataclass(frozen=True, slots=True)
class AppTarget:
    """The app of a call and the version it resolved to (`dev` or `X.Y.Z`)."""

    id: str
    workspace_id: str
    env: dict[str, Any]
    version: str | None  # None: the asked-for version does not exist
    deprecated: bool
    # A deprecated version's sunset (RFC 8594): calls from then on are refused. Its headers'
    # values are formatted once per read of the target, not per call (`_notices`).
    sunset: datetime | None = None
    sunset_header: str = ""
    deprecation_header: str = ""  # `@<unix seconds>` of the deprecation (RFC 9745)
    link_header: str = ""  # where to read about it, and the version to move to


def docs_url(app_id: str, version: str) -> str:
    """The app's docs page of one version (`builder/transfer_router.py`), as a reference a
    client resolves against the URL it called (RFC 8288)."""
    return f"/api/v1/apps/{app_id}/docs?version={version}"


def _notices(
    app_id: str, version: str, latest: str | None, deprecated_at: datetime
) -> tuple[str, str]:
    """The `Deprecation` (RFC 9745: a structured-field Date) and `Link` values of a deprecated
    version: its docs page (`rel="deprecation"`) and, when a newer version is `latest`, that
    one's (`rel="successor-version"`, RFC 5829)."""
    links = [f'<{docs_url(app_id, version)}>; rel="deprecation"; type="text/html"']
    if latest is not None and latest != version:
        links.append(f'<{docs_url(app_id, latest)}>; rel="successor-version"; type="text/html"')
    return f"@{int(deprecated_at.timestamp())}", ", ".join(links)


@dataclass(frozen=True, slots=True)
class LoadedApi:
    target: AppTarget
    compiled: CompiledApi


@dataclass(slots=True)
class _Published:
    """One published version: its snapshot, its collections as they were when `checked` (the
    clock's time of their versions' last read) and the APIs compiled from them so far."""

    apis: dict[str, Any]
    frozen: dict[str, dict[str, Any]]  # the snapshot's collections (`CollectionSchema.to_dict`)
    collections: dict[str, CollectionSchema]
    checked: float
    compiled: dict[str, CompiledApi] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _DevEntry:
    fingerprint: tuple[Any, ...]
    compiled: CompiledApi


class _Lru(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_fresh(self, key: Any) -> Any:
        value = self.get(key)
        if value is not None:
            self.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class ApiLoader:
    """One per process (kept on `app.state`); safe to share between concurrent calls."""

    def __init__(
        self, *, max_versions: int = 256, max_dev: int = 512, max_targets: int = 4096
    ) -> None:
        self._published = _Lru(max_versions)
        self._forgotten = 0  # bumped by `forget_collections`: an entry read across it is stale
        self._dev = _Lru(max_dev)
        self._targets = RefreshingCache[tuple[str, str], AppTarget](
            TARGET_TTL, max_targets, self._read_target
        )

    @property
    def clock(self) -> Callable[[], float]:
        return self._targets.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self._targets.clock = clock

    def forget_app(self, app_id: str) -> None:
        """Called when this process changes an app (env, publish, deprecate, delete), so its own
        next call sees the change at once."""
        self._targets.forget_where(lambda key: key[0] == app_id)

    def forget_collections(self, app_id: str) -> None:
        """Called when this process changed one of the app's collections (a dataset saved or
        deleted): its published versions read their collections' versions again at their next
        call, so their writes take the fast path at once (`_recheck`)."""
        self._forgotten += 1
        for (owner, _), entry in self._published.items():
            if owner == app_id:
                entry.checked = -math.inf

    async def close(self) -> None:
        await self._targets.close()

    async def target(self, conn: AsyncConnection, app_id: str, version: str) -> AppTarget:
        """Resolve `version` (`dev`, `latest` or `X.Y.Z`) of `app_id`; 404 for an unknown app.
        One query at most once a second per (app, version) — the app row with the version's
        `deprecated` flag and sunset. An unknown version gives `version=None`, so the caller can
        check membership before saying so. Unknown apps are not cached (a miss is a 404 that
        costs a query, like any probe)."""
        return await self._targets.get(conn, (app_id, version))

    @staticmethod
    async def _read_target(conn: AsyncConnection, key: tuple[str, str]) -> AppTarget:
        app_id, version = key
        # Not an id (the gateway's body has no validators): no such app. PostgreSQL would refuse
        # a NUL in the query (500); only a cache miss pays for the check.
        if not is_id(app_id):
            raise AppNotFoundError()
        if version == "dev":
            row = (
                await conn.execute(
                    select(App.id, App.workspace_id, App.env).where(App.id == app_id)
                )
            ).first()
            if row is None:
                raise AppNotFoundError()
            return AppTarget(row.id, row.workspace_id, dict(row.env or {}), "dev", False)
        wanted = App.latest_version if version == "latest" else literal(version)
        stmt = select(
            App.id,
            App.workspace_id,
            App.env,
            AppVersion.version.label("found"),
            App.latest_version,
            AppVersion.deprecated,
            AppVersion.deprecated_at,
            AppVersion.created_at,
            AppVersion.sunset_at,
        ).select_from(
            App.__table__.outerjoin(
                AppVersion.__table__,
                and_(AppVersion.app_id == App.id, AppVersion.version == wanted),
            )
        )
        row = (await conn.execute(stmt.where(App.id == app_id))).first()
        if row is None:
            raise AppNotFoundError()
        found = None if row.found is None else str(row.found)
        deprecated = bool(row.deprecated)
        sunset: datetime | None = row.sunset_at if deprecated else None
        deprecation, link = "", ""
        if deprecated and found is not None:
            # Deprecated by a release before `deprecated_at` existed: its publish time (0019).
            since = row.deprecated_at or row.created_at
            deprecation, link = _notices(row.id, found, row.latest_version, since)
        return AppTarget(
            row.id,
            row.workspace_id,
            dict(row.env or {}),
            found,
            deprecated,
            sunset,
            "" if sunset is None else format_datetime(sunset, usegmt=True),
            deprecation,
            link,
        )

    async def load(self, conn: AsyncConnection, target: AppTarget, api: str) -> CompiledApi:
        """The compiled `api` of the resolved target; 404 `api_not_found`."""
        if target.version is None:
            raise VersionNotFoundError()
        if target.version == "dev":
            return await self._load_dev(conn, target.id, api)
        return await self._load_published(conn, target.id, target.version, api)

    async def _load_published(
        self, conn: AsyncConnection, app_id: str, version: str, api: str
    ) -> CompiledApi:
        key = (app_id, version)
        entry: _Published | None = self._published.get_fresh(key)
        now = self.clock()
        if entry is None:
            forgotten = self._forgotten
            entry = await self._read_published(conn, app_id, version, now)
            if forgotten != self._forgotten:  # a change committed while it was read
                entry.checked = -math.inf
            self._published.put(key, entry)
        elif now - entry.checked >= TARGET_TTL:
            await self._recheck(conn, entry, now)
        compiled = entry.compiled.get(api)
        if compiled is None:
            definition = entry.apis.get(api)
            if definition is None:
                raise ApiNotFoundError()
            # The version was priced when it was published; its cost stays as frozen.
            compiled = compile_api(definition, entry.collections, {})
            frozen_cost = int(definition.get("cost") or 0)
            compiled = _with_cost(compiled, frozen_cost)
            entry.compiled[api] = compiled
        return compiled

    @staticmethod
    async def _read_published(
        conn: AsyncConnection, app_id: str, version: str, now: float
    ) -> _Published:
        snapshot = await conn.scalar(
            select(AppVersion.snapshot).where(
                AppVersion.app_id == app_id, AppVersion.version == version
            )
        )
        if snapshot is None:
            raise VersionNotFoundError(f"The app has no version {version}")
        frozen = dict(snapshot.get("collections") or {})
        rows = await _collection_rows(conn, [str(schema["id"]) for schema in frozen.values()])
        collections = {
            name: _published_schema(schema, rows.get(str(schema["id"])))
            for name, schema in frozen.items()
        }
        return _Published(dict(snapshot.get("apis") or {}), frozen, collections, now)

    @staticmethod
    async def _recheck(conn: AsyncConnection, entry: _Published, now: float) -> None:
        """Read the versions of the entry's collections (one indexed query, on the call's
        connection, at most once every `TARGET_TTL`); rebuild the schemas of those that moved
        and drop the APIs compiled with them. A field change (this process's or another node's)
        would otherwise leave every SQLite write of the version on the slow path — its
        conditional insert writing nothing, then the fields read under the lock — for the life
        of the process. Checked here, once a second, rather than by the write that finds the
        version moved: the record store would have to reach back into this cache, and a
        version no write calls costs nothing either way. Calls meanwhile use the entry as it
        is: a stale basis is only slower (the write reads the fields), never wrong."""
        entry.checked = now
        held = {schema.id: _version(schema) for schema in entry.collections.values()}
        if not held:
            return
        rows = await conn.execute(
            select(Collection.id, Collection.version).where(Collection.id.in_(list(held)))
        )
        versions = {str(row.id): int(row.version) for row in rows}
        moved = [
            name
            for name, schema in entry.collections.items()
            if versions.get(schema.id) != held[schema.id]
        ]
        if not moved:
            return
        ids = [entry.collections[name].id for name in moved]
        current = await _collection_rows(conn, ids)
        rebuilt = {
            name: _published_schema(entry.frozen[name], current.get(entry.collections[name].id))
            for name in moved
        }
        entry.collections = {**entry.collections, **rebuilt}
        entry.compiled = {}

    async def _load_dev(self, conn: AsyncConnection, app_id: str, api: str) -> CompiledApi:
        row = (
            await conn.execute(
                select(
                    ApiDefinition.id,
                    ApiDefinition.updated_at,
                    ApiDefinition.api,
                    ApiDefinition.enabled,
                    ApiDefinition.price,
                    ApiDefinition.cost,
                    ApiDefinition.params,
                    ApiDefinition.steps,
                    ApiDefinition.return_steps,
                    ApiDefinition.auth,
                ).where(ApiDefinition.app_id == app_id, ApiDefinition.api == api)
            )
        ).first()
        if row is None:
            raise ApiNotFoundError()
        collection_rows = (
            await conn.execute(
                select(
                    Collection.id,
                    Collection.name,
                    Collection.fields,
                    Collection.updated_at,
                    Collection.version,
                ).where(Collection.app_id == app_id)
            )
        ).all()
        fingerprint = (
            row.id,
            _stamp(row.updated_at),
            tuple(sorted((c.id, _stamp(c.updated_at), c.version) for c in collection_rows)),
        )
        cached: _DevEntry | None = self._dev.get_fresh((app_id, api))
        if cached is not None and cached.fingerprint == fingerprint:
            return cached.compiled
        collections = {
            c.name: CollectionSchema.build(
                id=c.id, app_id=app_id, name=c.name, fields=c.fields or [], version=c.version
            )
            for c in collection_rows
        }
        definition = {
            "api": row.api,
            "enabled": row.enabled,
            "price": row.price,
            "params": row.params,
            "steps": row.steps,
            "returnSteps": row.return_steps,
            "auth": row.auth,
        }
        compiled = _with_cost(compile_api(definition, collections, {}), int(row.cost or 0))
        self._dev.put((app_id, api), _DevEntry(fingerprint, compiled))
        return compiled

    async def collections(self, conn: AsyncConnection, app_id: str) -> dict[str, CollectionSchema]:
        """The app's current collections (ad-hoc workflows run against `dev`'s)."""
        rows = (
            await conn.execute(
                select(Collection.id, Collection.name, Collection.fields, Collection.version).where(
                    Collection.app_id == app_id
                )
            )
        ).all()
        return {
            r.name: CollectionSchema.build(
                id=r.id, app_id=app_id, name=r.name, fields=r.fields or [], version=r.version
            )
            for r in rows
        }


async def load_prices(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(select(StepPrice.step_type, StepPrice.cost))
    return {str(step_type): int(cost) for step_type, cost in rows}


def _stamp(value: datetime | str | None) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


async def _collection_rows(conn: AsyncConnection, ids: list[str]) -> dict[str, Row[Any]]:
    """The collections' `id`, `version` and `fields` now, by id (missing: deleted)."""
    if not ids:
        return {}
    rows = await conn.execute(
        select(Collection.id, Collection.version, Collection.fields).where(Collection.id.in_(ids))
    )
    return {str(row.id): row for row in rows}


def _version(schema: CollectionSchema) -> int | None:
    """The collection's version the schema was built with (None: the collection was gone)."""
    return None if schema.basis is None else schema.basis.version


def _published_schema(frozen: dict[str, Any], now: Row[Any] | None) -> CollectionSchema:
    """A snapshot's collection, with the collection's version and fields as they are now (its
    writes are checked against those, not the snapshot's); none when it is gone."""
    if now is None:
        return CollectionSchema.build(**frozen, published=True)
    return CollectionSchema.build(
        **frozen, published=True, version=now.version, current=now.fields or []
    )


def _with_cost(compiled: CompiledApi, cost: int) -> CompiledApi:
    """The stored cost (computed with the step prices at save or publish time)."""
    return replace(compiled, cost=cost)
