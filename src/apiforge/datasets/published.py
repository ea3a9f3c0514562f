"""Which published versions of an app still use fields an editor removes from a collection.

A published version is a frozen snapshot: its APIs keep filtering, sorting, grouping and writing
the collection with the fields it was published with. A field one of them names explicitly
(a filter, a sort, a projection, a grouping or metric, an upsert key, literal data) would be
read as empty for every record once its values are erased — a lookup that silently finds
nothing — so removing it is refused while a non-deprecated version names it, as a type change
is. Whether an API names a field is decided by the engine's own save-time checks: the API is
compiled against its snapshot without the removed fields, and an unknown-field refusal names
the place. Deprecated versions do not hold a field: deprecating is how a builder retires them,
and for the same reason one that names a field removed since stays deprecated
(`undeprecation_conflicts`).

Snapshots repeat: an API unchanged across versions is the same definition in each, so each
distinct (definition, collections, field) is compiled once per check, not once per version.
"""

from collections.abc import Collection as Names
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder.models import AppVersion
from apiforge.datasets.models import Collection
from apiforge.datasets.schema import CollectionSchema
from apiforge.engine.compiler import compile_api
from apiforge.engine.errors import DefinitionError

# (definition, the snapshot's collections, collection id, field) -> where it is named, or None
_Seen = dict[tuple[bytes, bytes, str, str], str | None]


async def removal_conflicts(
    session: AsyncSession, app_id: str, collection_id: str, removed: Names[str]
) -> list[dict[str, str]]:
    """`[{field, message}]` for each removed field an API of a published, non-deprecated
    version of the app names (the first such version and place); empty when none does."""
    if not removed:
        return []
    rows = await session.execute(
        select(AppVersion.version, AppVersion.snapshot)
        .where(AppVersion.app_id == app_id, AppVersion.deprecated.is_(False))
        .order_by(AppVersion.major, AppVersion.minor, AppVersion.patch)
    )
    found: dict[str, dict[str, str]] = {}
    seen: _Seen = {}
    for version, snapshot in rows:
        wanted = set(removed) - found.keys()
        if not wanted:
            break
        for name, (api, place) in _named(snapshot, collection_id, wanted, seen).items():
            found[name] = {
                "field": name,
                "message": f"published version {version} uses it (API {api}, {place}); "
                "deprecate that version first",
            }
    return [found[name] for name in sorted(found)]


async def undeprecation_conflicts(
    session: AsyncSession, app_id: str, snapshot: Mapping[str, Any]
) -> list[dict[str, str]]:
    """`[{field, message}]` for each field the snapshot's APIs name that its collection no
    longer has: undeprecated, the version would read it as empty on every record (the
    removal was allowed because the version was deprecated)."""
    collections = (snapshot or {}).get("collections") or {}
    ids = [str(s.get("id")) for s in collections.values()]
    if not ids:
        return []
    rows = await session.execute(
        select(Collection.id, Collection.name, Collection.fields).where(
            Collection.app_id == app_id, Collection.id.in_(ids)
        )
    )
    conflicts: list[dict[str, str]] = []
    seen: _Seen = {}
    for collection_id, name, fields in rows:
        frozen = next(s for s in collections.values() if s.get("id") == collection_id)
        now = {str(f.get("name")) for f in fields or []}
        gone = {str(f.get("name")) for f in frozen.get("fields", [])} - now
        for field, (api, place) in sorted(_named(snapshot, collection_id, gone, seen).items()):
            conflicts.append(
                {
                    "field": field,
                    "message": f"removed from collection {name} since; this version uses it "
                    f"(API {api}, {place}): add the field back or keep the version deprecated",
                }
            )
    return conflicts


def _named(
    snapshot: Mapping[str, Any] | None, collection_id: str, wanted: set[str], seen: _Seen
) -> dict[str, tuple[str, str]]:
    """field -> (api, place) for each field of `wanted` the snapshot holds in the collection
    and one of its APIs names (the first API, in snapshot order)."""
    collections = (snapshot or {}).get("collections") or {}
    frozen = next((s for s in collections.values() if s.get("id") == collection_id), None)
    if frozen is None:
        return {}
    wanted = wanted & {str(f.get("name")) for f in frozen.get("fields", [])}
    found: dict[str, tuple[str, str]] = {}
    if not wanted:
        return found
    frozen_key = orjson.dumps(collections, option=orjson.OPT_SORT_KEYS)
    for api, definition in ((snapshot or {}).get("apis") or {}).items():
        steps = orjson.dumps(definition.get("steps") or [])
        key = b""
        for name in sorted(wanted - found.keys()):
            if name.encode() not in steps:  # cheap: most APIs never mention the field
                continue
            key = key or orjson.dumps(definition, option=orjson.OPT_SORT_KEYS)
            memo = (key, frozen_key, collection_id, name)
            if memo not in seen:
                seen[memo] = _place_naming(definition, collections, collection_id, name)
            place = seen[memo]
            if place is not None:
                found[name] = (str(api), place)
    return found


def _place_naming(
    definition: Mapping[str, Any],
    collections: Mapping[str, Mapping[str, Any]],
    collection_id: str,
    name: str,
) -> str | None:
    """Where `definition` names field `name` of the collection, or None when it does not."""
    try:
        compile_api(definition, _schemas(collections, collection_id, name), {})
    except DefinitionError as exc:
        try:  # refused for another reason too (checks made stricter since): not this field's
            compile_api(definition, _schemas(collections, collection_id, None), {})
        except DefinitionError:
            return None
        return exc.field
    return None


def _schemas(
    collections: Mapping[str, Mapping[str, Any]], collection_id: str, without: str | None
) -> dict[str, CollectionSchema]:
    """A snapshot's collections as the engine compiles them, less one field of one of them."""
    return {
        label: CollectionSchema.build(
            id=str(schema["id"]),
            app_id=str(schema["app_id"]),
            name=str(schema["name"]),
            fields=[
                f
                for f in schema.get("fields", [])
                if schema.get("id") != collection_id or f.get("name") != without
            ],
        )
        for label, schema in collections.items()
    }
