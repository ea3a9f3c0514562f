"""PreparedPage: a constant-filter `getMany` compiled once and run on the driver connection must
answer exactly what the general `get_many` path answers — isolation, filters, sorts, projections,
encrypted fields, paging and the call's own uncommitted writes included."""

from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.errors import ApiforgeError
from apiforge.datasets.filtering import record_filter
from apiforge.datasets.schema import CollectionSchema
from apiforge.datasets.store import RecordStore
from tests.unit.datasets._support import Tenants

FILTERS: list[Any] = [
    None,
    {"published": {"_eq": True}},
    {"_and": [{"published": {"_eq": True}}, {"views": {"_gte": 3}}]},
    {"title": {"_in": ["t1", "t4", "'; DROP TABLE records; --"]}},
    {"_or": [{"rating": {"_gt": 2.5}}, {"slug": {"_null": True}}]},
    {"title": {"_starts_with": "t"}},
]


async def _fill(store: RecordStore, schema: CollectionSchema, tenants: Tenants) -> None:
    for i in range(7):
        data = {
            "title": f"t{i}",
            "published": i % 2 == 0,
            "views": i,
            "rating": i / 2,
            "secret": f"s{i}",
            "tags": [i],
        }
        if i % 3:
            data["slug"] = f"slug-{i}"
        await store.insert(schema, tenants.a, data)
    await store.insert(schema, tenants.b, {"title": "t1", "published": True, "views": 9})


@pytest.mark.parametrize("tree", FILTERS)
@pytest.mark.parametrize(
    ("sort", "fields", "with_total"),
    [
        (("-createdTime",), None, True),
        (("views",), ("title", "secret"), True),
        (("-rating", "title"), None, False),
    ],
)
async def test_prepared_page_answers_like_get_many(
    store: RecordStore,
    tenants: Tenants,
    connection: AsyncConnection,
    tree: Any,
    sort: tuple[str, ...],
    fields: tuple[str, ...] | None,
    with_total: bool,
) -> None:
    posts = await tenants.new_collection(connection)
    await _fill(store, posts, tenants)  # not committed: the page must see the call's writes

    def where() -> Any:
        return None if tree is None else record_filter(connection.dialect, posts, tree)

    prepared = store.prepare_page(
        posts, where=where(), sort=sort, fields=fields, with_total=with_total
    )
    assert prepared is not None
    for partition in (tenants.a, tenants.b):
        for page_no, page_size in ((1, 2), (2, 2), (4, 2), (1, 50)):
            expected = await store.get_many(
                posts,
                partition,
                where=where(),
                sort=sort,
                page_no=page_no,
                page_size=page_size,
                fields=fields,
                with_total=with_total,
            )
            got = await prepared.run(store, partition, page_no, page_size)
            assert got == expected


async def test_prepared_page_refuses_bad_pages(
    store: RecordStore, tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    prepared = store.prepare_page(posts)
    assert prepared is not None
    for page_no, page_size in ((0, 10), (1, 0), (1, 10_000)):
        with pytest.raises(ApiforgeError) as exc:
            await prepared.run(store, tenants.a, page_no, page_size)
        assert exc.value.status == 400
