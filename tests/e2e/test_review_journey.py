"""One builder's and one consumer's whole journey over the HTTP API, in separate accounts and
workspaces, with every number reconciled exactly: the RU each call was charged (by its version's
price) against the consumer's wallet, ledger, spend chart, request log and monthly call quota,
and the builder's earnings wallet, earnings list and chart, and the platform's revenue. Calls
that fail (a step's 4xx, an upstream's 5xx, no balance, the quota, an idempotent replay) are in
the log and charged nothing; on both backends."""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.core.settings import Settings
from apiforge.gateway.stages.log import request_log_buffer
from tests.e2e._apps import in_workspace, new_api, new_app
from tests.e2e._billing import balances, ledger_invariants, top_up
from tests.e2e._keys import call, create_key, subscribe
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, data_of, new_workspace
from tests.factories import User, app_client, make_admin, register

COUNT_COST = 1  # one `count` step at the seeded step price
FLAG = [{"name": "fail", "type": "boolean", "default": False}]
# api -> (params, steps, price at 1.0.0)
SHOP_APIS: dict[str, tuple[list[Any], list[Any], int]] = {
    # cost 1; fails with the step's own 400 when asked to, after the count ran.
    "count": (
        FLAG,
        [
            {"id": "total", "type": "count", "collection": "items"},
            {
                "id": "check",
                "type": "assert",
                "condition": {"expr": "!args.fail"},
                "status": 400,
                "error": "asked_to_fail",
                "message": "failed on purpose",
            },
        ],
        10,
    ),
    # An upstream nothing listens on: the step's 502.
    "weather": ([], [{"id": "up", "type": "httpRequest", "url": "http://127.0.0.1:1/now"}], 10),
    "hello": ([], [{"id": "hello", "type": "set", "value": "hi"}], 0),
}


@dataclass
class Ledger:
    """What the journey expects: each answered call's request id with the RU it was charged
    (0 when nothing may move), and the statuses of every call the consumer made."""

    charged: dict[str, int] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)

    def note(self, response: Response, price: int) -> Response:
        self.statuses[response.status_code] += 1
        charged = response.status_code == 200 and "Idempotent-Replayed" not in response.headers
        self.charged[response.headers["X-Request-ID"]] = price if charged else 0
        return response

    @property
    def spent(self) -> int:
        return sum(self.charged.values())

    @property
    def paid_calls(self) -> list[int]:
        return [price for price in self.charged.values() if price]


async def _builder_app(client: AsyncClient, builder: User) -> tuple[str, dict[str, str]]:
    """B's public Shop app in a workspace of its own, published as 1.0.0; the app id and B's
    headers in that workspace."""
    studio = in_workspace(builder, await new_workspace(client, builder, "Studio"))
    app_id = await new_app(client, studio, "Shop", visibility="public")
    fields = [{"name": "n", "type": "integer"}]
    body = {"appId": app_id, "name": "items", "fields": fields}
    data_of(await client.post("/api/v1/datasets", json=body, headers=studio))
    for api, (params, steps, price) in SHOP_APIS.items():
        await new_api(client, studio, app_id, api, params=params, steps=steps, price=price)
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "major", "notes": "v1"}, headers=studio
    )
    assert data_of(published)["version"] == "1.0.0"
    return app_id, studio


async def _prices_in_docs(client: AsyncClient, user: User, app_id: str, version: str) -> Any:
    """api -> `x-price` of the app's generated docs at `version`, as another workspace reads
    them (no `x-cost`: the builder's business)."""
    url = f"/api/v1/apps/{app_id}/openapi.json?version={version}"
    document = (await client.get(url, headers=user.headers)).json()
    operations = [path["post"] for path in document["paths"].values()]
    assert all("x-cost" not in operation for operation in operations)
    return {operation["operationId"]: operation["x-price"] for operation in operations}


async def _pie_total(client: AsyncClient, headers: dict[str, str], path: str) -> int:
    chart = data_of(await client.get(f"/api/v1/usage/{path}", headers=headers))
    return sum(int(share["value"]) for share in chart["series"])


async def _all(client: AsyncClient, headers: dict[str, str], path: str) -> list[Any]:
    """Every row of a paginated list, two rows a page: pages neither repeat nor skip a row."""
    rows: list[Any] = []
    page_no = 1
    while True:
        sep = "&" if "?" in path else "?"
        page = data_of(await client.get(f"{path}{sep}pageSize=2&pageNo={page_no}", headers=headers))
        rows.extend(page["list"])
        if page_no >= page["totalPage"]:
            assert len({row["id"] for row in rows}) == len(rows) == page["totalCount"]
            return rows
        page_no += 1


async def _calls_used(client: AsyncClient, user: User) -> int:
    usage = data_of(await client.get("/api/v1/user/plans", headers=user.headers))["usage"]
    [calls] = [row for row in usage if row["quota"] == "callsPerMonth"]
    used: int = calls["used"]
    return used


async def test_a_builder_and_a_consumer_journey_reconciles_to_the_last_ru(
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"welcome_credits": 0, "http_allow_hosts": ["127.0.0.1"]})
    async with app_client(settings) as (app, client):
        await _journey(app, client)


async def _journey(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    builder = await register(client)
    consumer = await register(client)
    expected = Ledger()

    # 1. B builds, prices and publishes; anyone reads the public docs with their prices.
    app_id, studio = await _builder_app(client, builder)
    assert await _prices_in_docs(client, consumer, app_id, "latest") == {
        "count": 10,
        "weather": 10,
        "hello": 0,
    }

    # 2. C subscribes to the app on a plan of 4 calls a month, with a key and no RU yet.
    await on_plan(client, admin, consumer.workspace_id, "starter", callsPerMonth=4)
    subscription = await subscribe(client, consumer.headers, app_id)
    key_id, key = await create_key(client, consumer.headers, type="app", appId=app_id)
    broke = expected.note(await call(client, key, app_id, "count"), 10)
    assert assert_error(broke, 402, "insufficient_balance")["price"] == 10
    await top_up(client, admin, consumer.workspace_id, 100)

    ok = expected.note(await call(client, key, app_id, "count"), 10)
    assert data_of(ok)["total"] == 0
    refused = await call(client, key, app_id, "count", {"fail": True})
    assert_error(expected.note(refused, 10), 400, "asked_to_fail")
    upstream = expected.note(await call(client, key, app_id, "weather"), 10)
    assert_error(upstream, 502, "upstream_error")
    assert data_of(expected.note(await call(client, key, app_id, "hello"), 0)) == {"hello": "hi"}
    retry = {"Idempotency-Key": '"order-1"'}
    first = expected.note(await call(client, key, app_id, "count", headers=retry), 10)
    again = expected.note(await call(client, key, app_id, "count", headers=retry), 10)
    assert again.headers["Idempotent-Replayed"] == "1"
    assert again.content == first.content

    # 2xx answers count against the month's calls, a replay too (docs/idempotency.md).
    over = assert_error(
        expected.note(await call(client, key, app_id, "count"), 10), 403, "quota_exceeded"
    )
    assert (over["quota"], over["limit"], over["used"]) == ("callsPerMonth", 4, 4)
    await on_plan(client, admin, consumer.workspace_id, "pro", callsPerMonth=-1)
    data_of(expected.note(await call(client, key, app_id, "count"), 10))

    # 3. B reprices count in 1.1.0 and deprecates 1.0.0; C stays on 1.0.0, then moves.
    [count_id] = [
        api["id"]
        for api in data_of(await client.get(f"/api/v1/apps/{app_id}/apis", headers=studio))["list"]
        if api["api"] == "count"
    ]
    repriced = await client.patch(
        f"/api/v1/apps/{app_id}/apis/{count_id}", json={"price": 25}, headers=studio
    )
    assert data_of(repriced)["price"] == 25
    await client.post(f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=studio)
    sunset = {"deprecated": 1, "sunset": "2999-01-01T00:00:00Z"}
    old = f"/api/v1/apps/{app_id}/versions/1.0.0"
    data_of(await client.patch(old, json=sunset, headers=studio))
    assert (await _prices_in_docs(client, consumer, app_id, "1.0.0"))["count"] == 10
    assert (await _prices_in_docs(client, consumer, app_id, "latest"))["count"] == 25

    pinned = expected.note(await call(client, key, app_id, "count", version="1.0.0"), 10)
    assert data_of(pinned)["total"] == 0
    assert pinned.headers["Deprecation"].startswith("@")
    assert pinned.headers["Sunset"] == "Tue, 01 Jan 2999 00:00:00 GMT"
    moved = expected.note(await call(client, key, app_id, "count"), 25)
    assert data_of(moved)["total"] == 0
    assert "Deprecation" not in moved.headers
    short = expected.note(await call(client, key, app_id, "count", version="1.1.0"), 25)
    data_of(short)

    # 4. Every number reconciles, for C, for B and for the platform.
    await request_log_buffer(app.state.gateway_state).flush()
    await _consumer_reconciles(client, consumer, app_id, key_id, expected)
    await _builder_reconciles(client, builder, studio, app_id, expected)
    platform = {
        w["kind"]: w["balance"]
        for w in data_of(await client.get("/api/v1/admin/wallets", headers=admin.headers))["list"]
    }
    assert platform["revenue"] == COUNT_COST * len(expected.paid_calls)
    assert platform["issuance"] == -100
    await ledger_invariants(app)

    # 5. C pauses (403 `app_not_enabled`), then cancels: its keys go with the subscription.
    url = f"/api/v1/subscriptions/{subscription}"
    data_of(await client.patch(url, json={"enabled": 0}, headers=consumer.headers))
    assert_error(await call(client, key, app_id, "count"), 403, "app_not_enabled")
    data_of(await client.patch(url, json={"enabled": 1}, headers=consumer.headers))
    data_of(await client.delete(url, headers=consumer.headers))
    assert_error(await call(client, key, app_id, "count"), 401, "invalid_api_key")
    assert_error(
        await client.get(f"/api/v1/api-keys/{key_id}", headers=consumer.headers),
        404,
        "api_key_not_found",
    )
    assert await balances(client, consumer) == {"balance": 100 - expected.spent, "earnings": 0}


async def _consumer_reconciles(
    client: AsyncClient, consumer: User, app_id: str, key_id: str, expected: Ledger
) -> None:
    headers = consumer.headers
    assert await balances(client, consumer) == {"balance": 100 - expected.spent, "earnings": 0}

    logs = await _all(client, headers, "/api/v1/request-logs")
    assert {row["requestId"] for row in logs} == set(expected.charged)
    assert Counter(row["status"] for row in logs) == expected.statuses
    assert {row["keyId"] for row in logs} == {key_id}
    assert {row["appId"] for row in logs} == {app_id}

    entries = await _all(client, headers, "/api/v1/ledger-entries?kind=call")
    charged = {entry["requestId"]: -entry["amount"] for entry in entries}
    assert charged == {rid: price for rid, price in expected.charged.items() if price}
    assert {entry["walletKind"] for entry in entries} == {"balance"}
    # Every 200 charged nothing is the free API or a replay, and says so.
    unpaid = [row for row in logs if row["status"] == 200 and row["requestId"] not in charged]
    assert sorted((row["api"], row["reason"]) for row in unpaid) == [
        ("count", "idempotent_replay"),
        ("hello", ""),
    ]
    by_request = {row["requestId"]: row for row in logs}
    assert all(by_request[rid]["status"] == 200 for rid in charged)
    assert {by_request[rid]["version"]: price for rid, price in charged.items()} == {
        "1.0.0": 10,
        "1.1.0": 25,
    }

    assert await _pie_total(client, headers, "spend?chart=pie") == expected.spent
    assert await _pie_total(client, headers, "calls?chart=pie") == len(logs)
    assert (
        await _pie_total(client, headers, "calls?chart=pie&outcome=success")
        == (expected.statuses[200])
    )
    assert await _calls_used(client, consumer) == expected.statuses[200]


async def _builder_reconciles(
    client: AsyncClient, builder: User, studio: dict[str, str], app_id: str, expected: Ledger
) -> None:
    profit = sum(price - COUNT_COST for price in expected.paid_calls)
    wallets = data_of(await client.get("/api/v1/wallets", headers=studio))["list"]
    assert {w["kind"]: w["balance"] for w in wallets} == {"balance": 0, "earnings": profit}

    earnings = data_of(await client.get("/api/v1/earnings", headers=studio))
    assert earnings["total"] == profit
    assert [(row["appId"], row["api"]) for row in earnings["list"]] == [(app_id, "count")]
    assert earnings["list"][0]["calls"] == len(expected.paid_calls)
    assert earnings["list"][0]["amount"] == profit
    assert await _pie_total(client, studio, "earnings?chart=pie") == profit

    entries = await _all(client, studio, "/api/v1/ledger-entries?walletKind=earnings")
    assert {entry["requestId"]: entry["amount"] for entry in entries} == {
        rid: price - COUNT_COST for rid, price in expected.charged.items() if price
    }

    calls = await _all(client, studio, "/api/v1/request-logs?scope=builder")
    assert {row["requestId"] for row in calls} == set(expected.charged)
    assert all("args" not in row and "clientIp" not in row for row in calls)
    assert await _pie_total(client, studio, "calls?chart=pie&scope=builder") == len(calls)
    # B's personal workspace built nothing: none of it shows there.
    assert data_of(await client.get("/api/v1/earnings", headers=builder.headers))["total"] == 0


async def test_a_key_for_another_enabled_app_says_so(client: AsyncClient) -> None:
    """A consumer of two of one builder's apps calling one with the other's key was told the
    app it subscribed to and reads the docs of does not exist (404 `app_not_found`): the 404
    hides private apps, but an app the workspace has enabled is no secret to it."""
    builder = await register(client)
    consumer = await register(client)
    app_id, studio = await _builder_app(client, builder)
    other = await new_app(client, studio, "Other", visibility="public")
    private = await new_app(client, studio, "Private")
    for each in (other, private):
        await new_api(client, studio, each, "hello", steps=SHOP_APIS["hello"][1])
        published = await client.post(
            f"/api/v1/apps/{each}/versions", json={"bump": "major"}, headers=studio
        )
        data_of(published)
    await subscribe(client, consumer.headers, app_id)
    await subscribe(client, consumer.headers, other)
    _, key = await create_key(client, consumer.headers, type="app", appId=app_id)

    wrong = assert_error(await call(client, key, other, "hello"), 403, "key_not_for_app")
    assert wrong == {"error": "key_not_for_app"}
    # Nothing is told about an app the workspace has not enabled, public or not.
    stranger = await new_app(client, studio, "Stranger", visibility="public")
    for hidden in (private, stranger):
        assert_error(await call(client, key, hidden, "hello"), 404, "app_not_found")


async def test_a_bad_sort_is_refused_before_any_wallet_exists(client: AsyncClient) -> None:
    """`/earnings` and `/redemptions` answered an empty 200 to any `sort` until the workspace
    had an earnings wallet, and a 400 once it had one: the same request, two answers."""
    builder = await register(client)
    for path, accepted in (("earnings", "day"), ("redemptions", "createdTime")):
        refused = await client.get(f"/api/v1/{path}?sort=amount", headers=builder.headers)
        errors = assert_error(refused, 400, "invalid_sort_field")["errors"]
        assert errors == [{"field": "sort", "message": f"must be one of: {accepted}"}]
    assert set(await balances(client, builder)) == {"balance", "earnings"}  # wallets now
    for path in ("earnings", "redemptions"):
        refused = await client.get(f"/api/v1/{path}?sort=amount", headers=builder.headers)
        assert_error(refused, 400, "invalid_sort_field")
