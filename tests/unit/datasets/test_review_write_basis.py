"""A schema knows the collection's version and fields it was loaded with (`Basis`); a write whose
version is still the collection's is checked against those without reading them (SQLite: its
statement is conditional on the version), and one whose version moved is checked against the
fields as they are now, as every write was (`RecordStore._hold_fields`). Each test loads a
schema, then changes the collection as a dataset save does (fields and version together)."""

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.errors import ApiforgeError
from apiforge.datasets.models import Collection, Record
from apiforge.datasets.schema import CollectionSchema
from apiforge.datasets.store import RecordStore
from apiforge.tools.ids import new_id
from tests.unit.datasets._support import Tenants

pytestmark = pytest.mark.anyio

TEXT = {"name": "text", "type": "string"}
TAG = {"name": "tag", "type": "string"}


async def _save(connection: AsyncConnection, schema: CollectionSchema, fields: Any) -> None:
    """The collection's fields as a committed dataset save leaves them: the version moves."""
    await connection.execute(
        update(Collection)
        .where(Collection.id == schema.id)
        .values(fields=fields, version=Collection.version + 1)
    )


async def _stored(connection: AsyncConnection, record_id: str) -> dict[str, Any]:
    data = await connection.scalar(select(Record.data).where(Record.id == record_id))
    assert isinstance(data, dict)
    return data


async def _write(
    store: RecordStore, schema: CollectionSchema, partition: str, how: str, data: Any
) -> dict[str, Any]:
    if how == "insert":
        return await store.insert(schema, partition, data)
    record = await store.insert(schema, partition, {"text": "first"})
    return await store.update(schema, partition, record["id"], data)


@pytest.mark.parametrize("how", ["insert", "update"])
async def test_a_write_loaded_before_a_field_removal_keeps_no_value_of_it(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection, how: str
) -> None:
    schema = await tenants.new_collection(connection, "notes", [TEXT, TAG])
    assert schema.basis is not None
    assert schema.basis.version == 1
    loaded = schema
    if how == "update":  # the record exists before the removal: written with a current schema
        record = await store.insert(schema, tenants.a, {"text": "first"})
        await _save(connection, schema, [TEXT])
        written = await store.update(loaded, tenants.a, record["id"], {"tag": "late"})
    else:
        await _save(connection, schema, [TEXT])
        written = await store.insert(loaded, tenants.a, {"text": "t", "tag": "late"})

    assert written["tag"] is None
    assert "tag" not in await _stored(connection, written["id"])


@pytest.mark.parametrize("how", ["insert", "update"])
async def test_a_write_loaded_before_a_type_change_is_refused(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection, how: str
) -> None:
    schema = await tenants.new_collection(connection, "notes", [TEXT, TAG])
    record = await store.insert(schema, tenants.a, {"text": "first"})
    await _save(connection, schema, [TEXT, {**TAG, "type": "integer"}])
    writes = {
        "insert": lambda: store.insert(schema, tenants.a, {"text": "t", "tag": "old"}),
        "update": lambda: store.update(schema, tenants.a, record["id"], {"tag": "old"}),
    }
    with pytest.raises(ApiforgeError) as exc:
        await writes[how]()

    assert (exc.value.status, exc.value.reason) == (409, "schema_changed")
    rows = (await connection.execute(select(Record.data))).scalars().all()
    assert all("tag" not in data for data in rows)


@pytest.mark.parametrize("how", ["insert", "update"])
async def test_a_write_with_a_current_schema_keeps_what_it_knows(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection, how: str
) -> None:
    schema = await tenants.new_collection(connection, "notes", [TEXT, TAG])
    written = await _write(store, schema, tenants.a, how, {"text": "t", "tag": "kept"})
    assert written["tag"] == "kept"
    assert (await _stored(connection, written["id"]))["tag"] == "kept"


@pytest.mark.parametrize("how", ["insert", "update"])
async def test_a_published_write_is_checked_against_the_collection_not_its_snapshot(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection, how: str
) -> None:
    """A snapshot reading `tag` as text, loaded while the collection (at that version) has it
    as an integer: the version is current, the snapshot's own fields are not the collection's."""
    schema = await tenants.new_collection(connection, "notes", [TEXT, TAG])
    await _save(connection, schema, [TEXT, {**TAG, "type": "integer"}])
    published = CollectionSchema.build(
        **schema.to_dict(),
        published=True,
        version=2,
        current=[TEXT, {**TAG, "type": "integer"}],
    )
    with pytest.raises(ApiforgeError) as exc:
        await _write(store, published, tenants.a, how, {"text": "t", "tag": "old"})
    assert exc.value.reason == "schema_changed"


async def test_a_published_write_keeps_a_field_removed_before_it_loaded(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    """Its version is current: the values of fields its snapshot knows are its to keep."""
    schema = await tenants.new_collection(connection, "notes", [TEXT, TAG])
    await _save(connection, schema, [TEXT])
    published = CollectionSchema.build(
        **schema.to_dict(), published=True, version=2, current=[TEXT]
    )
    written = await store.insert(published, tenants.a, {"text": "t", "tag": "kept"})
    assert (await _stored(connection, written["id"]))["tag"] == "kept"


async def test_a_write_or_delete_in_a_deleted_collection_is_dataset_not_found(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    schema = await tenants.new_collection(connection, "notes", [TEXT, TAG])
    record = await store.insert(schema, tenants.a, {"text": "t"})
    await connection.execute(delete(Record).where(Record.collection_id == schema.id))
    await connection.execute(delete(Collection).where(Collection.id == schema.id))
    writes: list[Callable[[], Awaitable[Any]]] = [
        lambda: store.insert(schema, tenants.a, {"text": "u"}),
        lambda: store.update(schema, tenants.a, record["id"], {"text": "u"}),
        lambda: store.delete(schema, tenants.a, record["id"]),
    ]
    for write in writes:
        with pytest.raises(ApiforgeError) as exc:
            await write()
        assert (exc.value.status, exc.value.reason) == (404, "dataset_not_found")


@pytest.mark.parametrize("current", [True, False])
async def test_an_insert_into_a_deleted_workspaces_partition_is_refused(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection, current: bool
) -> None:
    """A call whose workspace was deleted after its key was read: its insert writes nothing
    (the deletion has removed the partition's records; one landing after it stayed for good),
    whether the schema is current (SQLite: the conditional insert) or not (the fields read)."""
    schema = await tenants.new_collection(connection, "notes", [TEXT, TAG])
    if not current:
        await _save(connection, schema, [TEXT, TAG, {"name": "more", "type": "string"}])
    gone = new_id()  # no workspace has this id any more
    with pytest.raises(ApiforgeError) as exc:
        await store.insert(schema, gone, {"text": "orphan"})
    assert (exc.value.status, exc.value.reason) == (404, "workspace_not_found")
    left = await connection.scalar(select(Record.id).where(Record.partition == gone))
    assert left is None
    # The live partition is written as ever.
    assert (await store.insert(schema, tenants.a, {"text": "kept"}))["text"] == "kept"
