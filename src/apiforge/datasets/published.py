"""Which published versions of an app still use fields an editor removes from a collection.

A published version is a frozen snapshot: its APIs keep filtering, sorting, grouping and writing
the collection with the fields it was published with. A field one of them names explicitly
(a filter, a sort, a projection, a grouping or metric, an upsert key, literal data) would be
read as empty for every record once its values are erased — a lookup that silently finds
nothing — so removing it is refused while a non-deprecated version names it, as a type change
is. Whether an API names a field is decided by the engine's own save-time checks: the API is
compiled against its snapshot without the removed fields, and an unknown-field refusal names
the place. Deprecated versions do not hold a field: deprecating is how a builder retires them.
"""

from collections.abc import Collection as Names
from collections.abc import Mapping
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder.models import AppVersion
from apiforge.datasets.schema import CollectionSchema
from apiforge.engine.compiler import compile_api
from apiforge.engine.errors import DefinitionError


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
    for version, snapshot in rows:
        collections = (snapshot or {}).get("collections") or {}
        frozen = next((s for s in collections.values() if s.get("id") == collection_id), None)
        if frozen is None:
            continue
        held = {str(f.get("name")) for f in frozen.get("fields", [])}
        wanted = (held & set(removed)) - found.keys()
        if not wanted:
            continue
        for api, definition in ((snapshot or {}).get("apis") or {}).items():
            for name in sorted(wanted - found.keys()):
                place = _place_naming(definition, collections, collection_id, name)
                if place is not None:
                    found[name] = {
                        "field": name,
                        "message": f"published version {version} uses it (API {api}, {place}); "
                        "deprecate that version first",
                    }
    return [found[name] for name in sorted(found)]


def _place_naming(
    definition: Mapping[str, Any],
    collections: Mapping[str, Mapping[str, Any]],
    collection_id: str,
    name: str,
) -> str | None:
    """Where `definition` names field `name` of the collection, or None when it does not."""
    steps = orjson.dumps(definition.get("steps") or [])
    if name.encode() not in steps:  # cheap: most APIs never mention the field
        return None
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
