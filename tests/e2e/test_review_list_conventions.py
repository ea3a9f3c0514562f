"""List conventions under review: `from`/`to` ranges at the precision times are shown in (whole
seconds), pages that neither repeat nor lose rows of one second, and the bounds of `pageNo`,
`pageSize`, `sort`, `order` and times on every list that takes them.

Rows of one second are written straight into the tables (at chosen microseconds): calls can't be
made to land within one second on demand."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import insert, select, update

from apiforge.billing.models import LedgerEntry, Wallet
from apiforge.datasets.models import Record
from apiforge.keys.models import ApiKey
from apiforge.plans.models import QuotaHit
from apiforge.tools.ids import new_id
from apiforge.usage.models import RequestLog
from tests.e2e._apps import new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, make_admin, register

SECOND = datetime(2025, 5, 5, 10, 0, 0, tzinfo=UTC)
SHOWN = "2025-05-05T10:00:00Z"
EARLY, LATE = SECOND + timedelta(microseconds=200_000), SECOND + timedelta(microseconds=700_000)


def _log(workspace_id: str, at: datetime) -> dict[str, Any]:
    return {
        "id": new_id(),
        "created_at": at,
        "request_id": f"req-{new_id()}",
        "workspace_id": workspace_id,
        "app_workspace_id": workspace_id,
        "account_id": None,
        "key_id": None,
        "caller_kind": "console",
        "app_id": "a" * 26,
        "api": "ping",
        "version": "dev",
        "status": 200,
        "reason": "",
        "latency_ms": 1.0,
        "client_ip": "127.0.0.1",
        "args": {},
    }


async def _rows_of_one_second(app: FastAPI, workspace_id: str, times: list[datetime]) -> None:
    """A request log, an earned call's ledger entry and a quota hit of `workspace_id` at each of
    `times`."""
    async with app.state.engine.begin() as conn:
        earnings = await conn.scalar(
            select(Wallet.id).where(Wallet.workspace_id == workspace_id, Wallet.kind == "earnings")
        )
        for at in times:
            await conn.execute(insert(RequestLog).values(**_log(workspace_id, at)))
            await conn.execute(
                insert(LedgerEntry).values(
                    id=new_id(),
                    transaction_id=new_id(),
                    wallet_id=earnings,
                    workspace_id=workspace_id,
                    amount=5,
                    kind="call",
                    created_at=at,
                    app_id="a" * 26,
                    api="ping",
                    note="",
                )
            )
            await conn.execute(
                insert(QuotaHit).values(
                    id=new_id(),
                    created_at=at,
                    last_at=at,
                    workspace_id=workspace_id,
                    plan_id="p" * 26,
                    quota="callsPerMonth",
                    operation="invocations",
                    quota_limit=1,
                    used=1,
                    hits=1,
                )
            )


async def _ranged(
    client: AsyncClient, user: User, admin: User, query: dict[str, str]
) -> dict[str, list[str]]:
    """The createdTime of every row each ranged list shows for `query` (earnings: one per call)."""
    shown: dict[str, list[str]] = {}
    for name, path, headers, extra in (
        ("request-logs", "/api/v1/request-logs", user.headers, {}),
        ("builder-logs", "/api/v1/request-logs", user.headers, {"scope": "builder"}),
        ("ledger-entries", "/api/v1/ledger-entries", user.headers, {"kind": "call"}),
        (
            "quota-hits",
            "/api/v1/admin/quota-hits",
            admin.headers,
            {"workspaceId": user.workspace_id},
        ),
    ):
        page = data_of(await client.get(path, params={**query, **extra}, headers=headers))
        assert page["totalCount"] == len(page["list"]), (name, query, page)
        shown[name] = [item["createdTime"] for item in page["list"]]
    report = data_of(await client.get("/api/v1/earnings", params=query, headers=user.headers))
    calls = [(row["day"], row["calls"]) for row in report["list"]]
    shown["earnings"] = [SHOWN for day, count in calls if day == SHOWN[:10] for _ in range(count)]
    return shown


async def test_rows_shown_in_one_second_are_in_or_out_of_a_range_together(
    app: FastAPI, client: AsyncClient
) -> None:
    user, admin = await register(client), await make_admin(app, client)
    data_of(await client.get("/api/v1/wallets", headers=user.headers))  # creates them
    await _rows_of_one_second(app, user.workspace_id, [EARLY, LATE])
    both: list[str] = [SHOWN, SHOWN]
    none: list[str] = []
    cases: list[tuple[dict[str, str], list[str]]] = [
        ({"from": "2025-05-05T10:00:00.500Z"}, both),  # a JavaScript toISOString(): milliseconds
        ({"to": "2025-05-05T10:00:00.500Z"}, none),
        ({"from": "2025-05-05T10:00:00.5+00:00", "to": "2025-05-05T10:00:00.9Z"}, none),
        ({"from": "2025-05-05T12:00:00.300+02:00"}, both),  # an offset, a fraction: 10:00:00
        ({"to": "2025-05-05T10:00:00.999999"}, none),  # no offset: UTC
        ({"from": SHOWN}, both),
        ({"to": SHOWN}, none),  # `to` is exclusive
        ({"from": SHOWN, "to": "2025-05-05T10:00:01Z"}, both),
        ({"from": "2025-05-05", "to": "2025-05-06"}, both),
        ({"from": "2025-05-05T10:00:01Z"}, none),
    ]
    for query, expected in cases:
        shown = await _ranged(client, user, admin, query)
        assert shown == dict.fromkeys(shown, expected), query


async def test_pages_through_rows_of_one_time_neither_repeat_nor_lose_any(
    app: FastAPI, client: AsyncClient
) -> None:
    user, admin = await register(client), await make_admin(app, client)
    data_of(await client.get("/api/v1/wallets", headers=user.headers))
    await _rows_of_one_second(app, user.workspace_id, [EARLY] * 5)  # to the microsecond
    for path, headers, query in (
        ("/api/v1/request-logs", user.headers, {"sort": "createdTime"}),
        ("/api/v1/request-logs", user.headers, {"sort": "status"}),
        ("/api/v1/request-logs", user.headers, {"scope": "builder", "sort": "latencyMs"}),
        ("/api/v1/ledger-entries", user.headers, {"kind": "call"}),
        ("/api/v1/admin/quota-hits", admin.headers, {"sort": "hits"}),
    ):
        for order in ("asc", "desc"):
            seen: list[str] = []
            for page_no in (1, 2, 3, 4):
                params = {**query, "order": order, "pageNo": str(page_no), "pageSize": "2"}
                page = data_of(await client.get(path, params=params, headers=headers))
                assert (page["totalCount"], page["totalPage"]) == (5, 3), (path, params)
                seen += [item["id"] for item in page["list"]]
            assert len(seen) == len(set(seen)) == 5, (path, query, order)


async def test_version_list_sorts_by_a_known_field_or_refuses(client: AsyncClient) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    data_of(
        await client.post(
            f"/api/v1/apps/{app_id}/apis",
            json={"api": "ping", "steps": [{"id": "p", "type": "set", "value": 1}]},
            headers=user.headers,
        )
    )
    for bump in ("patch", "minor", "patch"):
        response = await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": bump}, headers=user.headers
        )
        data_of(response)

    async def listed(**query: str) -> list[str]:
        path = f"/api/v1/apps/{app_id}/versions"
        page = data_of(await client.get(path, params=query, headers=user.headers))
        return [item["version"] for item in page["list"]]

    newest_first = await listed()
    assert newest_first == ["1.1.1", "1.1.0", "1.0.0"]
    assert await listed(sort="version", order="asc") == newest_first[::-1]
    assert await listed(sort="createdTime", order="desc") == newest_first
    for bad in ("bogus", "createdTime;DROP TABLE app_versions", "major"):
        response = await client.get(
            f"/api/v1/apps/{app_id}/versions", params={"sort": bad}, headers=user.headers
        )
        data = assert_error(response, 400, "invalid_sort_field")
        assert data["errors"][0]["field"] == "sort"
    assert await listed() == newest_first


async def test_keys_never_used_or_never_expiring_sort_alike_on_every_backend(
    app: FastAPI, client: AsyncClient
) -> None:
    """Never used: the oldest use; never expiring: the latest expiry (not wherever the
    database puts NULL: first on SQLite, last on PostgreSQL)."""
    user = await register(client)
    soon, later = datetime.now(UTC) + timedelta(days=1), datetime.now(UTC) + timedelta(days=2)
    ids: dict[str, str] = {}
    for name, expires in (("later", later), ("never", None), ("soon", soon)):
        body = {"type": "ws", "name": name, "role": "viewer"}
        if expires is not None:
            body["expiresTime"] = expires.isoformat()
        ids[name] = data_of(await client.post("/api/v1/api-keys", json=body, headers=user.headers))[
            "id"
        ]
    async with app.state.engine.begin() as conn:
        for name, used in (("later", SECOND), ("soon", SECOND + timedelta(days=1))):
            await conn.execute(
                update(ApiKey).where(ApiKey.id == ids[name]).values(last_used_at=used)
            )

    async def names(**query: str) -> list[str]:
        page = data_of(await client.get("/api/v1/api-keys", params=query, headers=user.headers))
        by_id = {key_id: name for name, key_id in ids.items()}
        return [by_id[item["id"]] for item in page["list"]]

    assert await names(sort="expiresTime", order="asc") == ["soon", "later", "never"]
    assert await names(sort="expiresTime", order="desc") == ["never", "later", "soon"]
    assert await names(sort="lastUsedTime", order="asc") == ["never", "later", "soon"]
    assert await names(sort="lastUsedTime", order="desc") == ["soon", "later", "never"]


async def test_record_filters_compare_created_and_updated_times_as_shown(
    app: FastAPI, client: AsyncClient
) -> None:
    """A record matches `createdTime _eq` its own createdTime, and not `_gt` it (the stored
    time has microseconds the shown one lacks)."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    body = {"appId": app_id, "name": "posts", "fields": [{"name": "title", "type": "string"}]}
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))[
        "id"
    ]
    path = f"/api/v1/datasets/{dataset_id}/records"
    ids: dict[str, str] = {}
    times = {"early": EARLY, "late": LATE, "next": SECOND + timedelta(seconds=1, microseconds=1)}
    for title in times:
        response = await client.post(path, json={"title": title}, headers=user.headers)
        ids[title] = data_of(response)["id"]
    async with app.state.engine.begin() as conn:
        for title, at in times.items():
            await conn.execute(
                update(Record).where(Record.id == ids[title]).values(created_at=at, updated_at=at)
            )

    async def titles(tree: dict[str, Any]) -> list[str]:
        query = {"filter": json.dumps(tree), "sort": "createdTime", "order": "asc"}
        page = data_of(await client.get(path, params=query, headers=user.headers))
        assert page["totalCount"] == len(page["list"]), tree
        return [record["title"] for record in page["list"]]

    listed = data_of(await client.get(path, params={"sort": "createdTime"}, headers=user.headers))
    assert {r["createdTime"] for r in listed["list"]} == {SHOWN, "2025-05-05T10:00:01Z"}
    same, after = ["early", "late"], ["next"]
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"_eq": SHOWN}, same),
        ({"_neq": SHOWN}, after),
        ({"_lt": SHOWN}, []),
        ({"_lte": SHOWN}, same),
        ({"_gt": SHOWN}, after),
        ({"_gte": SHOWN}, same + after),
        ({"_in": [SHOWN, "2020-01-01T00:00:00Z"]}, same),
        ({"_in": []}, []),
        ({"_nin": [SHOWN]}, after),
        ({"_nin": []}, same + after),
        ({"_between": [SHOWN, SHOWN]}, same),
        ({"_between": ["2025-05-05T10:00:01Z", "9999-12-31T23:59:59Z"]}, after),
        ({"_lte": "9999-12-31T23:59:59Z"}, same + after),
        ({"_eq": "2025-05-05T12:00:00+02:00"}, same),  # an offset: the same second
    ]
    for ops, expected in cases:
        for field in ("createdTime", "updatedTime"):
            assert await titles({field: ops}) == expected, (field, ops)
