"""A write checks the schema it holds against the collection's fields as they are when it writes
(`RecordStore._hold_fields`): a value of a field whose type or encryption changed since is
refused (409 `schema_changed`), from a `dev` schema or a published version's snapshot alike;
values the write leaves as they were, and fields it does not touch, pass."""

import dataclasses

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.errors import ApiforgeError
from apiforge.datasets.models import Collection
from apiforge.datasets.schema import CollectionSchema
from apiforge.datasets.store import RecordStore
from tests.unit.datasets._support import Tenants

pytestmark = pytest.mark.anyio

TAG = {"name": "tag", "type": "string"}
TEXT = {"name": "text", "type": "string"}


async def _stale(
    connection: AsyncConnection, tenants: Tenants, *, published: bool
) -> CollectionSchema:
    """A schema of `notes` (text, tag) loaded before `tag` became an integer."""
    schema = await tenants.new_collection(connection, "notes", [TEXT, TAG])
    now = [TEXT, {**TAG, "type": "integer"}]
    await connection.execute(  # as a schema change: the version moves with the fields
        update(Collection)
        .where(Collection.id == schema.id)
        .values(fields=now, version=Collection.version + 1)
    )
    return dataclasses.replace(schema, published=published)


@pytest.mark.parametrize("published", [False, True])
async def test_a_value_of_a_changed_field_is_refused(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection, published: bool
) -> None:
    stale = await _stale(connection, tenants, published=published)
    with pytest.raises(ApiforgeError) as exc:
        await store.insert(stale, tenants.a, {"text": "t", "tag": "old"})
    assert (exc.value.status, exc.value.reason) == (409, "schema_changed")
    assert exc.value.details["errors"] == [
        {"field": "tag", "message": "its type or encryption changed"}
    ]
    assert exc.value.headers == {"Retry-After": "1"}
    assert await store.count(stale, tenants.a) == 0


async def test_a_write_leaving_a_changed_field_alone_passes(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    stale = await _stale(connection, tenants, published=False)
    record = await store.insert(stale, tenants.a, {"text": "t"})
    edited = await store.update(stale, tenants.a, record["id"], {"text": "u"})
    assert (edited["text"], edited["tag"], edited["version"]) == ("u", None, 2)
    with pytest.raises(ApiforgeError) as exc:
        await store.update(stale, tenants.a, record["id"], {"tag": "old"})
    assert exc.value.reason == "schema_changed"
