"""RecordStore: typed writes, optimistic locking, uniqueness, encryption, paging, isolation."""

import operator
from typing import Any

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.errors import ApiforgeError
from apiforge.datasets.crypto import FieldCipher
from apiforge.datasets.models import Record
from apiforge.datasets.sql import field_expression
from apiforge.datasets.store import RecordStore
from apiforge.tools.clock import utcnow
from tests.unit.datasets._support import Tenants

INJECTION = "'; DROP TABLE accounts; --"
SCRIPT = "<script>alert(1)</script>"


def _error(exc: pytest.ExceptionInfo[ApiforgeError]) -> tuple[int, str, dict[str, Any]]:
    return exc.value.status, exc.value.reason, exc.value.details


async def test_insert_returns_every_field_and_metadata(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    record = await store.insert(
        posts,
        tenants.a,
        {"title": "Hello", "views": 3.0, "publishedAt": "2024-05-01T10:00:00+02:00"},
    )
    assert record["title"] == "Hello"
    assert record["views"] == 3
    assert isinstance(record["views"], int)
    assert record["published"] is False  # default applied
    assert record["publishedAt"] == "2024-05-01T08:00:00Z"  # normalised to UTC
    assert record["body"] is None  # absent fields read as null
    assert record["version"] == 1
    assert record["createdTime"].endswith("Z")
    assert next(iter(record)) == "id"
    assert list(record)[-3:] == [
        "version",
        "createdTime",
        "updatedTime",
    ]
    assert await store.get_one(posts, tenants.a, record["id"]) == record


async def test_invalid_data_names_each_field_and_writes_nothing(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    with pytest.raises(ApiforgeError) as exc:
        await store.insert(
            posts,
            tenants.a,
            {"views": "3", "published": "yes", "tags": {}, "meta": [], "nope": 1, "rating": True},
        )
    status, reason, details = _error(exc)
    assert (status, reason) == (400, "invalid_record")
    fields = {e["field"] for e in details["errors"]}
    assert fields == {"title", "views", "published", "tags", "meta", "nope", "rating"}
    assert await store.count(posts, tenants.a) == 0


async def test_injection_looking_strings_are_stored_as_plain_data(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    record = await store.insert(posts, tenants.a, {"title": INJECTION, "body": SCRIPT})
    again = await store.get_one(posts, tenants.a, record["id"])
    assert again is not None
    assert (again["title"], again["body"]) == (INJECTION, SCRIPT)
    assert (await connection.execute(text("SELECT count(*) FROM accounts"))).scalar_one() == 2


async def test_update_merges_and_stale_version_is_a_conflict(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    record = await store.insert(posts, tenants.a, {"title": "v1", "body": "text"})
    updated = await store.update(posts, tenants.a, record["id"], {"title": "v2"}, version=1)
    assert (updated["title"], updated["body"], updated["version"]) == ("v2", "text", 2)
    with pytest.raises(ApiforgeError) as exc:
        await store.update(posts, tenants.a, record["id"], {"title": "v3"}, version=1)
    assert _error(exc) == (409, "version_conflict", {"currentVersion": 2})
    current = await store.get_one(posts, tenants.a, record["id"])
    assert current is not None
    assert current["title"] == "v2"


async def test_patch_null_clears_a_field_but_not_a_required_one(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    record = await store.insert(posts, tenants.a, {"title": "t", "body": "b"})
    cleared = await store.update(posts, tenants.a, record["id"], {"body": None})
    assert cleared["body"] is None
    with pytest.raises(ApiforgeError) as exc:
        await store.update(posts, tenants.a, record["id"], {"title": None})
    assert _error(exc)[:2] == (400, "invalid_record")


async def test_replace_drops_fields_left_out(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    record = await store.insert(posts, tenants.a, {"title": "t", "body": "b", "views": 1})
    replaced = await store.update(posts, tenants.a, record["id"], {"title": "new"}, replace=True)
    assert (replaced["title"], replaced["body"], replaced["views"]) == ("new", None, None)
    with pytest.raises(ApiforgeError) as exc:
        await store.update(posts, tenants.a, record["id"], {"body": "x"}, replace=True)
    assert _error(exc)[:2] == (400, "invalid_record")


async def test_unique_field_is_unique_per_partition(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    first = await store.insert(posts, tenants.a, {"title": "a", "slug": "hello"})
    with pytest.raises(ApiforgeError) as exc:
        await store.insert(posts, tenants.a, {"title": "b", "slug": "hello"})
    assert _error(exc)[:2] == (409, "duplicate_value")
    assert exc.value.details["errors"] == [{"field": "slug", "message": "already exists"}]
    other = await store.insert(posts, tenants.b, {"title": "b", "slug": "hello"})
    assert other["slug"] == "hello"
    second = await store.insert(posts, tenants.a, {"title": "c", "slug": "other"})
    with pytest.raises(ApiforgeError) as exc:
        await store.update(posts, tenants.a, second["id"], {"slug": "hello"})
    assert _error(exc)[:2] == (409, "duplicate_value")
    # Re-saving a record's own value is not a duplicate.
    await store.update(posts, tenants.a, first["id"], {"slug": "hello", "title": "a2"})


async def test_unique_index_backs_the_check(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    """Even a write that skips the pre-check cannot store a duplicate: the database refuses."""
    posts = await tenants.new_collection(connection)
    await store.insert(posts, tenants.a, {"title": "a", "slug": "s"})
    with pytest.raises(ApiforgeError) as exc:
        await store._write(  # the raw write path, as a racing request would reach it
            posts,
            insert(Record).values(
                id="0" * 26,
                collection_id=posts.id,
                partition=tenants.a,
                data={"title": "b", "slug": "s"},
                version=1,
                size=1,
                created_at=utcnow(),
                updated_at=utcnow(),
            ),
        )
    assert _error(exc)[:2] == (409, "duplicate_value")


async def test_encrypted_field_is_ciphertext_at_rest_and_clear_on_read(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    record = await store.insert(posts, tenants.a, {"title": "t", "secret": "id-123456"})
    raw = (
        await connection.execute(select(Record.data).where(Record.id == record["id"]))
    ).scalar_one()
    assert raw["secret"] != "id-123456"
    assert "id-123456" not in str(raw)
    assert record["secret"] == "id-123456"
    patched = await store.update(posts, tenants.a, record["id"], {"title": "t2"})
    assert patched["secret"] == "id-123456"  # an untouched ciphertext survives a merge


async def test_undecryptable_value_reads_as_null(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    record = await store.insert(posts, tenants.a, {"title": "t", "secret": "x"})
    other_key = RecordStore(connection, FieldCipher("another server key" * 3))
    again = await other_key.get_one(posts, tenants.a, record["id"])
    assert again is not None
    assert again["secret"] is None
    assert again["title"] == "t"


async def test_other_partition_never_reads_or_changes_a_record(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    record = await store.insert(posts, tenants.a, {"title": "private"})
    rid = record["id"]
    assert await store.get_one(posts, tenants.b, rid) is None
    assert (await store.get_many(posts, tenants.b))["list"] == []
    assert await store.count(posts, tenants.b) == 0
    for attempt in (
        store.update(posts, tenants.b, rid, {"title": "stolen"}),
        store.update(posts, tenants.b, rid, {"title": "stolen"}, replace=True),
        store.delete(posts, tenants.b, rid),
    ):
        with pytest.raises(ApiforgeError) as exc:
            await attempt
        assert _error(exc)[:2] == (404, "record_not_found")
    # Upsert on B's side creates B's own record; A's stays untouched.
    comments = await tenants.new_collection(
        connection, "accounts", [{"name": "email", "type": "string", "unique": True}]
    )
    mine, _ = await store.upsert(comments, tenants.a, "email", {"email": "x@example.com"})
    theirs, created = await store.upsert(comments, tenants.b, "email", {"email": "x@example.com"})
    assert created
    assert theirs["id"] != mine["id"]
    again = await store.get_one(posts, tenants.a, rid)
    assert again is not None
    assert again["title"] == "private"
    assert again["version"] == 1


async def test_other_collection_never_reads_a_record_by_id(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    notes = await tenants.new_collection(connection, "notes", [{"name": "title", "type": "string"}])
    record = await store.insert(posts, tenants.a, {"title": "x"})
    assert await store.get_one(notes, tenants.a, record["id"]) is None
    with pytest.raises(ApiforgeError):
        await store.delete(notes, tenants.a, record["id"])


async def test_malformed_ids_are_not_found(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    assert await store.get_one(posts, tenants.a, INJECTION) is None
    with pytest.raises(ApiforgeError) as exc:
        await store.update(posts, tenants.a, "' OR 1=1 --", {"title": "x"})
    assert exc.value.status == 404


async def test_delete_with_stale_version_conflicts(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    record = await store.insert(posts, tenants.a, {"title": "x"})
    await store.update(posts, tenants.a, record["id"], {"title": "y"})
    with pytest.raises(ApiforgeError) as exc:
        await store.delete(posts, tenants.a, record["id"], version=1)
    assert _error(exc) == (409, "version_conflict", {"currentVersion": 2})
    await store.delete(posts, tenants.a, record["id"], version=2)
    assert await store.get_one(posts, tenants.a, record["id"]) is None


async def test_upsert_updates_the_matching_record(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    first, created = await store.upsert(posts, tenants.a, "slug", {"slug": "s", "title": "one"})
    assert created
    second, created = await store.upsert(posts, tenants.a, "slug", {"slug": "s", "title": "two"})
    assert not created
    assert second["id"] == first["id"]
    assert second["version"] == 2
    with pytest.raises(ApiforgeError) as exc:
        await store.upsert(posts, tenants.a, "title", {"title": "x"})
    assert exc.value.status == 400  # `on` must be a unique field


async def test_pages_sort_and_count(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    for i in range(5):
        await store.insert(posts, tenants.a, {"title": f"t{i}", "views": 10 - i})
    page = await store.get_many(posts, tenants.a, sort=["-createdTime"], page_size=2)
    assert [r["title"] for r in page["list"]] == ["t4", "t3"]
    assert (page["totalCount"], page["totalPage"], page["pageNo"]) == (5, 3, 1)
    last = await store.get_many(posts, tenants.a, sort=["views"], page_no=3, page_size=2)
    assert [r["views"] for r in last["list"]] == [10]
    fields = await store.get_many(posts, tenants.a, fields=["title"], with_total=False)
    assert set(fields["list"][0]) == {"id", "title"}
    assert "totalCount" not in fields
    with pytest.raises(ApiforgeError) as exc:
        await store.get_many(posts, tenants.a, sort=["secret"])
    assert _error(exc)[:2] == (400, "invalid_sort_field")
    with pytest.raises(ApiforgeError):
        await store.get_many(posts, tenants.a, sort=["tags"])
    with pytest.raises(ApiforgeError):
        await store.get_many(posts, tenants.a, page_size=0)


async def test_where_on_typed_fields(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    await store.insert(posts, tenants.a, {"title": "a", "published": True, "rating": 4.5})
    await store.insert(posts, tenants.a, {"title": "b", "published": False, "rating": 2})
    dialect = connection.dialect
    published = field_expression(dialect, posts.field("published"))  # type: ignore[arg-type]
    rating = field_expression(dialect, posts.field("rating"))  # type: ignore[arg-type]
    assert await store.count(posts, tenants.a, operator.eq(published, True)) == 1
    assert await store.count(posts, tenants.a, rating > 3.0) == 1
    assert await store.count(posts, tenants.b, operator.eq(published, True)) == 0


async def test_aggregate_groups_and_metrics(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    for published, views in [(True, 10), (True, 20), (False, 5)]:
        await store.insert(posts, tenants.a, {"title": "t", "published": published, "views": views})
    await store.insert(posts, tenants.b, {"title": "other tenant", "published": True, "views": 99})
    rows = await store.aggregate(
        posts,
        tenants.a,
        group_by=["published"],
        metrics={
            "n": ("count", None),
            "total": ("sum", "views"),
            "avg": ("avg", "views"),
            "top": ("max", "views"),
        },
    )
    assert rows == [
        {"published": False, "n": 1, "total": 5, "avg": 5.0, "top": 5},
        {"published": True, "n": 2, "total": 30, "avg": 15.0, "top": 20},
    ]
    with pytest.raises(ApiforgeError):
        await store.aggregate(posts, tenants.a, metrics={"x": ("sum", "title")})


async def test_integer_sums_are_exact_where_a_64_bit_running_total_overflows(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    # SQLite's sum() failed (a 500) as soon as a running total left 64 bits, even when the
    # final one fits; PostgreSQL sums bigint as numeric.
    posts = await tenants.new_collection(connection)
    big = 2**62 + 2**61
    for views in (big, big, -big, -5, 3):
        await store.insert(posts, tenants.a, {"title": "t", "views": views, "rating": views})
    rows = await store.aggregate(
        posts,
        tenants.a,
        metrics={"total": ("sum", "views"), "real": ("sum", "rating"), "top": ("max", "views")},
    )
    assert rows == [{"total": big - 2, "real": float(big - 2), "top": big}]
    assert isinstance(rows[0]["total"], int)


async def test_an_integer_sum_beyond_64_bits_is_a_clear_refusal(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    # Past 2**63 no later step can use the sum, and past 2**64 the JSON encoder cannot write it
    # (a 500 on PostgreSQL too): 422 on both backends.
    posts = await tenants.new_collection(connection)
    big = 2**62 + 2**61
    for views in (big, big, big):
        await store.insert(posts, tenants.a, {"title": "t", "views": views})
    metrics: dict[str, tuple[str, str | None]] = {"total": ("sum", "views")}
    with pytest.raises(ApiforgeError) as exc:
        await store.aggregate(posts, tenants.a, metrics=metrics)
    assert _error(exc) == (422, "aggregate_overflow", {"field": "views"})
    await store.insert(posts, tenants.a, {"title": "t", "views": -big})
    with pytest.raises(ApiforgeError):  # 2**63 + 2**62: exact, still over 64 signed bits
        await store.aggregate(posts, tenants.a, metrics=metrics)
    await store.insert(posts, tenants.a, {"title": "t", "views": -big})
    assert await store.aggregate(posts, tenants.a, metrics=metrics) == [{"total": big}]


async def test_min_and_max_of_a_boolean_field(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    # PostgreSQL has no max(boolean) (it answered 500); false sorts before true on both.
    posts = await tenants.new_collection(connection)
    metrics: dict[str, tuple[str, str | None]] = {
        "lo": ("min", "published"),
        "hi": ("max", "published"),
    }
    assert await store.aggregate(posts, tenants.a, metrics=metrics) == [{"lo": None, "hi": None}]
    await store.insert(posts, tenants.a, {"title": "a", "published": True, "views": 1})
    assert await store.aggregate(posts, tenants.a, metrics=metrics) == [{"lo": True, "hi": True}]
    await store.insert(posts, tenants.a, {"title": "b", "published": False, "views": 1})
    await store.insert(posts, tenants.a, {"title": "c", "published": True, "views": 2})
    rows = await store.aggregate(posts, tenants.a, group_by=["views"], metrics=metrics)
    assert rows == [{"views": 1, "lo": False, "hi": True}, {"views": 2, "lo": True, "hi": True}]


async def test_record_size_is_capped(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    with pytest.raises(ApiforgeError) as exc:
        await store.insert(posts, tenants.a, {"title": "x" * 300_000})
    assert _error(exc)[:2] == (413, "record_too_large")
    assert await store.count(posts, tenants.a) == 0


async def test_min_and_max_of_the_record_times_are_iso_text_on_every_backend(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    """`createdTime`/`updatedTime` are columns, not JSON values: SQLite hands their min and max
    back as its own stored text, which must come out as the records show them (`…Z`)."""
    posts = await tenants.new_collection(connection)
    first = await store.insert(posts, tenants.a, {"title": "a", "published": True, "views": 1})
    last = await store.insert(posts, tenants.a, {"title": "b", "published": False, "views": 2})
    metrics = {
        "first": ("min", "createdTime"),
        "last": ("max", "updatedTime"),
    }
    [row] = await store.aggregate(posts, tenants.a, metrics=metrics)
    assert row == {"first": first["createdTime"], "last": last["updatedTime"]}
    grouped = await store.aggregate(
        posts, tenants.a, group_by=["createdTime"], metrics={"n": ("count", None)}
    )
    assert [g["createdTime"] for g in grouped] == [first["createdTime"], last["createdTime"]]
