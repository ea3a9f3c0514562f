"""Data steps: checked on save against the collection, run in the caller's partition only."""

from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.errors import ApiforgeError
from apiforge.datasets.models import Record
from apiforge.datasets.schema import CollectionSchema
from apiforge.engine.base import EngineServices, RunContext, RunLimits
from apiforge.engine.compiler import CompiledApi, compile_api
from apiforge.engine.errors import DefinitionError
from apiforge.engine.runtime import execute, masker_for, trace_json
from apiforge.tools.clock import utcnow
from tests.unit.datasets._support import Tenants, connection, tenants

__all__ = ["connection", "tenants"]  # fixtures

PRICES = {
    "getOne": 1,
    "getMany": 1,
    "count": 1,
    "aggregate": 2,
    "insert": 2,
    "update": 2,
    "delete": 2,
    "upsert": 2,
}


async def _secret(app_id: str, connection: Any = None) -> str:
    return "s" * 40


async def _no_call(ctx: RunContext, api: str, version: str, args: dict[str, Any]) -> Any:
    raise AssertionError("no callApi here")


def build(steps: list[Any], collections: Mapping[str, CollectionSchema]) -> CompiledApi:
    return compile_api({"api": "t", "steps": steps}, collections, PRICES)


def context(
    connection: AsyncConnection,
    tenants: Tenants,
    partition: str,
    args: dict[str, Any],
    *,
    debug: bool = False,
) -> RunContext:
    return RunContext(
        app_id=tenants.app_id,
        builder_workspace_id=tenants.a,
        partition=partition,
        version="dev",
        args=args,
        token=None,
        env={"config": {}, "secrets": {}},
        now=utcnow(),
        connection=connection,
        services=EngineServices(
            signing_secret_for=_secret, call_api=_no_call, record_cipher=tenants.cipher
        ),
        limits=RunLimits(),
        trace=[] if debug else None,
    )


async def run(
    compiled: CompiledApi,
    connection: AsyncConnection,
    tenants: Tenants,
    partition: str,
    args: dict[str, Any] | None = None,
) -> Any:
    """The call's data, run as `partition`'s workspace (A builds the app; B is a consumer)."""
    result = await execute(compiled, context(connection, tenants, partition, args or {}))
    return result.data


def refused(steps: list[Any], collections: Mapping[str, CollectionSchema]) -> str:
    with pytest.raises(DefinitionError) as exc:
        build(steps, collections)
    return exc.value.field


# --- on save -------------------------------------------------------------------------------------


async def test_definitions_are_checked_against_the_collection(
    tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    c = {"posts": posts}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "getMany", "collection": "nope"}, "steps.s.collection"),
        (
            {"type": "getMany", "collection": "posts", "filter": {"colour": {"_eq": 1}}},
            "steps.s.filter.colour",
        ),
        (
            {"type": "getMany", "collection": "posts", "filter": {"secret": {"_eq": "x"}}},
            "steps.s.filter.secret",
        ),
        ({"type": "getMany", "collection": "posts", "sort": ["-colour"]}, "steps.s.sort.0"),
        ({"type": "getMany", "collection": "posts", "sort": ["tags"]}, "steps.s.sort.0"),
        ({"type": "getMany", "collection": "posts", "sort": ["secret"]}, "steps.s.sort.0"),
        ({"type": "getMany", "collection": "posts", "fields": ["nope"]}, "steps.s.fields.0"),
        (
            {"type": "getMany", "collection": "posts", "pageSize": 50, "maxPageSize": 20},
            "steps.s.pageSize",
        ),
        ({"type": "getMany", "collection": "posts", "pageSize": "20"}, "steps.s.pageSize"),
        ({"type": "getMany", "collection": "posts", "pages": 2}, "steps.s.pages"),
        ({"type": "getOne", "collection": "posts"}, "steps.s.recordId"),
        ({"type": "insert", "collection": "posts", "data": {"body": "no title"}}, "steps.s.data"),
        (
            {"type": "insert", "collection": "posts", "data": {"title": "t", "views": "x"}},
            "steps.s.data.views",
        ),
        (
            {"type": "insert", "collection": "posts", "data": {"title": "t", "nope": 1}},
            "steps.s.data.nope",
        ),
        ({"type": "insert", "collection": "posts", "data": "title"}, "steps.s.data"),
        (
            {"type": "update", "collection": "posts", "recordId": "x", "data": {"nope": 1}},
            "steps.s.data.nope",
        ),
        (
            {"type": "upsert", "collection": "posts", "on": "title", "data": {"title": "t"}},
            "steps.s.on",
        ),
        (
            {"type": "upsert", "collection": "posts", "on": "slug", "data": {"title": "t"}},
            "steps.s.data",
        ),
        (
            {
                "type": "aggregate",
                "collection": "posts",
                "metrics": {"n": {"op": "sum", "field": "title"}},
            },
            "steps.s.metrics.n.field",
        ),
        (
            {"type": "aggregate", "collection": "posts", "metrics": {"n": {"op": "max"}}},
            "steps.s.metrics.n.field",
        ),
        (
            {
                "type": "aggregate",
                "collection": "posts",
                "groupBy": ["tags"],
                "metrics": {"n": {"op": "count"}},
            },
            "steps.s.groupBy.0",
        ),
        (
            {"type": "aggregate", "collection": "posts", "metrics": {"n": {"op": "median"}}},
            "steps.s.metrics.n.op",
        ),
    ]
    for step, field in cases:
        assert refused([{"id": "s", **step}], c) == field, step


async def test_expressions_may_only_read_earlier_steps(
    tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    steps = [
        {
            "id": "one",
            "type": "getOne",
            "collection": "posts",
            "recordId": {"expr": "steps.later.id"},
        },
        {"id": "later", "type": "insert", "collection": "posts", "data": {"title": "t"}},
    ]
    assert refused(steps, {"posts": posts}) == "steps.one.recordId"


async def test_get_many_cost_follows_the_page_size_cap(
    tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    c = {"posts": posts}

    def cost(**config: Any) -> int:
        return build([{"id": "s", "type": "getMany", "collection": "posts", **config}], c).cost

    assert cost() == 1  # pageSize 20
    assert cost(pageSize=50) == 3
    assert cost(pageSize={"expr": "args.n"}) == 5  # default cap 100
    assert cost(pageSize={"expr": "args.n"}, maxPageSize=40) == 2
    assert cost(pageSize=1000, maxPageSize=1000) == 50


# --- at call time --------------------------------------------------------------------------------


async def test_blog_flow_through_every_data_step(
    tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    c = {"posts": posts}
    create = build(
        [
            {
                "id": "post",
                "type": "insert",
                "collection": "posts",
                "data": {
                    "title": {"expr": "args.title"},
                    "published": {"expr": "args.published"},
                    "views": {"expr": "args.views"},
                    "slug": {"expr": "args.slug"},
                },
            }
        ],
        c,
    )
    ids = []
    for i in range(5):
        args = {"title": f"t{i}", "published": i % 2 == 0, "views": i, "slug": f"s{i}"}
        ids.append((await run(create, connection, tenants, tenants.a, args))["post"]["id"])
    listing = build(
        [
            {
                "id": "posts",
                "type": "getMany",
                "collection": "posts",
                "filter": {"published": {"_eq": True}},
                "sort": ["-createdTime"],
                "pageNo": {"expr": "args.pageNo"},
                "pageSize": 2,
                "fields": ["title", "views"],
            }
        ],
        c,
    )
    page = (await run(listing, connection, tenants, tenants.a, {"pageNo": 1}))["posts"]
    assert [r["title"] for r in page["list"]] == ["t4", "t2"]
    assert (page["totalCount"], page["totalPage"], page["pageSize"]) == (3, 2, 2)
    assert set(page["list"][0]) == {"id", "title", "views"}
    second = (await run(listing, connection, tenants, tenants.a, {"pageNo": 2}))["posts"]
    assert [r["title"] for r in second["list"]] == ["t0"]

    get_update = build(
        [
            {
                "id": "post",
                "type": "getOne",
                "collection": "posts",
                "recordId": {"expr": "args.id"},
                "required": True,
            },
            {
                "id": "saved",
                "type": "update",
                "collection": "posts",
                "recordId": {"expr": "steps.post.id"},
                "version": {"expr": "args.version"},
                "data": {"title": {"expr": "args.title"}},
            },
        ],
        c,
    )
    out = await run(
        get_update, connection, tenants, tenants.a, {"id": ids[0], "version": 1, "title": "edited"}
    )
    assert (out["saved"]["title"], out["saved"]["version"]) == ("edited", 2)
    with pytest.raises(ApiforgeError) as exc:
        await run(
            get_update,
            connection,
            tenants,
            tenants.a,
            {"id": ids[0], "version": 1, "title": "stale"},
        )
    assert (exc.value.status, exc.value.reason) == (409, "version_conflict")
    assert exc.value.details["stepId"] == "saved"
    with pytest.raises(ApiforgeError) as exc:
        await run(
            get_update, connection, tenants, tenants.a, {"id": "0" * 26, "version": 1, "title": "x"}
        )
    assert (exc.value.status, exc.value.reason, exc.value.details["stepId"]) == (
        404,
        "record_not_found",
        "post",
    )

    stats = build(
        [
            {
                "id": "n",
                "type": "count",
                "collection": "posts",
                "filter": {"views": {"_gte": {"expr": "args.min"}}},
            },
            {
                "id": "by",
                "type": "aggregate",
                "collection": "posts",
                "groupBy": ["published"],
                "metrics": {"n": {"op": "count"}, "views": {"op": "sum", "field": "views"}},
            },
        ],
        c,
    )
    out = await run(stats, connection, tenants, tenants.a, {"min": 2})
    assert out["n"] == 3
    assert out["by"] == [
        {"published": False, "n": 2, "views": 4},
        {"published": True, "n": 3, "views": 6},
    ]

    upsert = build(
        [
            {
                "id": "u",
                "type": "upsert",
                "collection": "posts",
                "on": "slug",
                "data": {"slug": {"expr": "args.slug"}, "title": {"expr": "args.title"}},
            }
        ],
        c,
    )
    again = (await run(upsert, connection, tenants, tenants.a, {"slug": "s1", "title": "up"}))["u"]
    assert (again["id"], again["title"], again["version"]) == (ids[1], "up", 2)
    fresh = (await run(upsert, connection, tenants, tenants.a, {"slug": "new", "title": "n"}))["u"]
    assert fresh["id"] not in ids

    remove = build(
        [
            {
                "id": "d",
                "type": "delete",
                "collection": "posts",
                "recordId": {"expr": "args.id"},
                "required": False,
            }
        ],
        c,
    )
    assert (await run(remove, connection, tenants, tenants.a, {"id": ids[2]}))["d"] == {
        "id": ids[2],
        "deleted": True,
    }
    assert (await run(remove, connection, tenants, tenants.a, {"id": ids[2]}))["d"] == {
        "id": ids[2],
        "deleted": False,
    }


async def test_partition_b_never_reaches_partition_a(
    tenants: Tenants, connection: AsyncConnection
) -> None:
    """Every data step run for workspace B, even with A's record ids, sees and changes nothing
    of A's: reads come back empty, writes by id are 404, upserts create B's own records."""
    posts = await tenants.new_collection(connection)
    c = {"posts": posts}
    seed = build(
        [
            {
                "id": "p",
                "type": "insert",
                "collection": "posts",
                "data": {"title": "A only", "slug": "shared", "views": 7},
            }
        ],
        c,
    )
    a_id = (await run(seed, connection, tenants, tenants.a))["p"]["id"]
    reads = build(
        [
            {"id": "one", "type": "getOne", "collection": "posts", "recordId": {"expr": "args.id"}},
            {
                "id": "first",
                "type": "getOne",
                "collection": "posts",
                "filter": {"id": {"_eq": {"expr": "args.id"}}},
            },
            {"id": "many", "type": "getMany", "collection": "posts"},
            {"id": "n", "type": "count", "collection": "posts"},
            {
                "id": "agg",
                "type": "aggregate",
                "collection": "posts",
                "metrics": {"n": {"op": "count"}, "v": {"op": "sum", "field": "views"}},
            },
        ],
        c,
    )
    out = await run(reads, connection, tenants, tenants.b, {"id": a_id})
    assert out["one"] is None
    assert out["first"] is None
    assert (out["many"]["list"], out["many"]["totalCount"]) == ([], 0)
    assert out["n"] == 0
    assert out["agg"] == [{"n": 0, "v": None}]
    for step in (
        {"type": "update", "recordId": {"expr": "args.id"}, "data": {"title": "stolen"}},
        {
            "type": "update",
            "recordId": {"expr": "args.id"},
            "data": {"title": "x"},
            "replace": True,
        },
        {"type": "delete", "recordId": {"expr": "args.id"}},
    ):
        compiled = build([{"id": "w", "collection": "posts", **step}], c)
        with pytest.raises(ApiforgeError) as exc:
            await run(compiled, connection, tenants, tenants.b, {"id": a_id})
        assert (exc.value.status, exc.value.reason) == (404, "record_not_found")
    upsert = build(
        [
            {
                "id": "u",
                "type": "upsert",
                "collection": "posts",
                "on": "slug",
                "data": {"slug": "shared", "title": "B's"},
            }
        ],
        c,
    )
    b_record = (await run(upsert, connection, tenants, tenants.b))["u"]
    assert b_record["id"] != a_id
    assert b_record["version"] == 1
    mine = await run(reads, connection, tenants, tenants.a, {"id": a_id})
    assert mine["one"]["title"] == "A only"
    assert mine["one"]["version"] == 1
    assert mine["n"] == 1
    rows = (await connection.execute(select(Record.partition, Record.data))).all()
    assert sorted((p, d["title"]) for p, d in rows) == sorted(
        [(tenants.a, "A only"), (tenants.b, "B's")]
    )


async def test_call_time_values_are_checked(tenants: Tenants, connection: AsyncConnection) -> None:
    posts = await tenants.new_collection(connection)
    c = {"posts": posts}
    cases: list[tuple[dict[str, Any], dict[str, Any], str]] = [
        (
            {"type": "getMany", "pageSize": {"expr": "args.v"}, "maxPageSize": 50},
            {"v": 51},
            "invalid_page",
        ),
        ({"type": "getMany", "pageNo": {"expr": "args.v"}}, {"v": 0}, "invalid_page"),
        (
            {"type": "getMany", "filter": {"views": {"_eq": {"expr": "args.v"}}}},
            {"v": "many"},
            "invalid_filter",
        ),
        ({"type": "insert", "data": {"expr": "args.v"}}, {"v": [1]}, "step_failed"),
        ({"type": "insert", "data": {"title": {"expr": "args.v"}}}, {"v": 5}, "invalid_record"),
        ({"type": "getOne", "recordId": {"expr": "args.v"}}, {"v": 5}, "step_failed"),
    ]
    for step, args, reason in cases:
        compiled = build([{"id": "s", "collection": "posts", **step}], c)
        with pytest.raises(ApiforgeError) as exc:
            await run(compiled, connection, tenants, tenants.a, args)
        assert (exc.value.status, exc.value.reason) == (400, reason), step
        assert exc.value.details["stepId"] == "s"


async def test_nul_characters_are_refused_before_the_database(
    tenants: Tenants, connection: AsyncConnection
) -> None:
    # PostgreSQL cannot store NUL in text or jsonb (it answered 500); every backend says 400.
    posts = await tenants.new_collection(connection)
    c = {"posts": posts}
    saved = [
        ({"title": "a\x00b"}, "steps.s.data.title"),
        ({"title": "t", "meta": {"k\x00": 1}}, "steps.s.data.meta"),
        ({"title": "t", "tags": ["ok", {"a": "\x00"}]}, "steps.s.data.tags"),
    ]
    for data, field in saved:
        step = {"id": "s", "type": "insert", "collection": "posts", "data": data}
        assert refused([step], c) == field, data
    at_run = [
        ({"title": "a\x00"}, "title"),
        ({"title": "t", "meta": {"a": [{"k\x00": 1}]}}, "meta"),
        ({"title": "t", "secret": "\x00"}, "secret"),
    ]
    compiled = build(
        [{"id": "s", "type": "insert", "collection": "posts", "data": {"expr": "args.d"}}], c
    )
    for data, field in at_run:
        with pytest.raises(ApiforgeError) as exc:
            await run(compiled, connection, tenants, tenants.a, {"d": data})
        assert (exc.value.status, exc.value.reason) == (400, "invalid_record"), data
        errors = exc.value.details["errors"]
        assert errors == [{"field": field, "message": "cannot contain NUL characters"}]
    assert await run(
        build([{"id": "n", "type": "count", "collection": "posts"}], c),
        connection,
        tenants,
        tenants.a,
    ) == {"n": 0}


async def test_encrypted_fields_are_stored_encrypted_and_masked_in_traces(
    tenants: Tenants, connection: AsyncConnection
) -> None:
    posts = await tenants.new_collection(connection)
    compiled = build(
        [
            {
                "id": "p",
                "type": "insert",
                "collection": "posts",
                "data": {"title": "t", "secret": {"expr": "args.secret"}},
            }
        ],
        {"posts": posts},
    )
    ctx = context(connection, tenants, tenants.a, {"secret": "4111-1111"}, debug=True)
    result = await execute(compiled, ctx)
    assert result.data["p"]["secret"] == "4111-1111"
    stored = (await connection.execute(select(Record.data))).scalar_one()
    assert "4111-1111" not in str(stored)
    trace = trace_json(ctx.trace or [], masker_for(compiled, ctx))
    assert trace[0]["output"]["secret"] == "***"
    assert trace[0]["input"]["data"]["secret"] == "***"
    assert "4111-1111" not in orjson.dumps(trace).decode()


async def test_log_masks_encrypted_fields_of_a_record_it_writes(
    tenants: Tenants, connection: AsyncConnection
) -> None:
    # A record read back holds its encrypted fields decrypted: logged whole, they are masked by
    # key, as in a trace (no value list could name them).
    from structlog.testing import capture_logs

    posts = await tenants.new_collection(connection)
    compiled = build(
        [
            {
                "id": "p",
                "type": "insert",
                "collection": "posts",
                "data": {"title": "t", "secret": {"expr": "args.secret"}},
            },
            {
                "id": "note",
                "type": "log",
                "level": "warning",
                "message": {"expr": "{'saved': [steps.p]}"},
            },
        ],
        {"posts": posts},
    )
    with capture_logs() as logs:
        await execute(compiled, context(connection, tenants, tenants.a, {"secret": "4111-1111"}))
    (line,) = [entry for entry in logs if entry["event"] == "api_log"]
    assert "4111-1111" not in line["text"]
    assert orjson.loads(line["text"])["saved"][0]["secret"] == "***"
    assert orjson.loads(line["text"])["saved"][0]["title"] == "t"
