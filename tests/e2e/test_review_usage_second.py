"""Usage and revenue figures against what happened: one workload of charged, free, failed,
refused (402, 403) and replayed calls plus ad-hoc workflow runs, and every figure the consumer,
the builder and the platform see — request logs, call and money charts, the monthly call quota
and the wallets — checked exactly. Workflow runs are charged and logged but are no gateway
calls: they never use up `callsPerMonth` (docs/decisions.md, Billing)."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.core.settings import Settings
from apiforge.gateway.stages.log import request_log_buffer
from tests.e2e._billing import ITEM_FIELDS, PRICE, balances, ledger_invariants, market, top_up
from tests.e2e._keys import app_key
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

COUNT = {"id": "total", "type": "count", "collection": "items"}  # a 1 RU workflow


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def _own_app(client: AsyncClient, user: User) -> str:
    """An app of `user`'s workspace with an `items` collection, for workflow runs."""
    created = await client.post("/api/v1/apps", json={"name": "Ad hoc"}, headers=user.headers)
    app_id: str = data_of(created)["id"]
    body = {"appId": app_id, "name": "items", "fields": ITEM_FIELDS}
    data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))
    return app_id


async def _workflow(client: AsyncClient, user: User, app_id: str) -> None:
    body = {"appId": app_id, "steps": [COUNT]}
    assert data_of(await client.post("/api/v1/workflows", json=body, headers=user.headers)) == {
        "total": 0
    }


async def _call(
    client: AsyncClient, secret: str, app_id: str, api: str, **options: Any
) -> tuple[int, str]:
    """(status, reason) of one gateway call; `fail`, `key` (Idempotency-Key) optional."""
    headers = {"X-Api-Key": secret}
    if "key" in options:
        headers["Idempotency-Key"] = options["key"]
    body = {
        "appId": app_id,
        "api": api,
        "version": "latest",
        "args": {"fail": options.get("fail", False)},
    }
    response = await client.post("/api/v1/invocations", json=body, headers=headers)
    data = response.json()["data"]
    reason = data.get("error", "") if response.status_code != 200 else ""
    if response.headers.get("Idempotent-Replayed") == "1":
        reason = "replayed"
    return response.status_code, reason


async def _calls_used(client: AsyncClient, user: User) -> int:
    plans = data_of(await client.get("/api/v1/user/plans", headers=user.headers))
    [used] = [u["used"] for u in plans["usage"] if u["quota"] == "callsPerMonth"]
    return int(used)


async def _pie(client: AsyncClient, user: User, path: str, **query: Any) -> dict[str, int]:
    params = {"chart": "pie", **query}
    chart = data_of(await client.get(f"/api/v1/usage/{path}", params=params, headers=user.headers))
    return {s["id"]: s["value"] for s in chart["series"]}


async def _logs(client: AsyncClient, user: User, **query: Any) -> list[tuple[str, int]]:
    params = {"pageSize": 100, "order": "asc", **query}
    page = data_of(await client.get("/api/v1/request-logs", params=params, headers=user.headers))
    assert page["totalCount"] == len(page["list"])
    return [(row["api"], row["status"]) for row in page["list"]]


async def test_workflow_runs_leave_the_monthly_call_quota_to_gateway_calls(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    consumer = m.consumer
    await on_plan(client, m.admin, consumer.workspace_id, callsPerMonth=2)
    await top_up(client, m.admin, consumer.workspace_id, 3)
    own = await _own_app(client, consumer)
    for _ in range(3):
        await _workflow(client, consumer, own)
    assert await _calls_used(client, consumer) == 0

    # The quota is the gateway's: two calls pass, the third is refused.
    assert [(await _call(client, m.secret, m.app_id, "free"))[0] for _ in range(2)] == [200, 200]
    assert await _call(client, m.secret, m.app_id, "free") == (403, "quota_exceeded")
    await request_log_buffer(app.state.gateway_state).flush()
    assert await _calls_used(client, consumer) == 2
    # The runs are still in the caller's log and charts, named as runs.
    runs = await _logs(client, consumer, api="(workflow)")
    assert runs == [("(workflow)", 200)] * 3
    assert await _pie(client, consumer, "calls", outcome="success", groupBy="api") == {
        f"{own}/(workflow)": 3,
        f"{m.app_id}/free": 2,
    }


async def test_every_usage_and_revenue_figure_matches_the_workload(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    consumer, builder, other = m.consumer, m.builder, await register(client)
    await on_plan(client, m.admin, consumer.workspace_id, callsPerMonth=6)
    await top_up(client, m.admin, consumer.workspace_id, 3 * PRICE + 2)
    own = await _own_app(client, consumer)
    for _ in range(2):  # 2 RU to the platform; no gateway calls
        await _workflow(client, consumer, own)

    outcomes = [
        await _call(client, m.secret, m.app_id, "priced"),  # charged
        await _call(client, m.secret, m.app_id, "priced", key="k1"),  # charged
        await _call(client, m.secret, m.app_id, "priced", key="k1"),  # replayed: not charged
        await _call(client, m.secret, m.app_id, "free"),  # free
        await _call(client, m.secret, m.app_id, "priced", fail=True),  # failed: not charged
        await _call(client, m.secret, m.app_id, "priced"),  # charged: the wallet is empty now
        await _call(client, m.secret, m.app_id, "priced"),  # 402
        await _call(client, m.secret, m.app_id, "free"),  # the 6th success
        await _call(client, m.secret, m.app_id, "free"),  # over `callsPerMonth`: 403
    ]
    assert outcomes == [
        (200, ""),
        (200, ""),
        (200, "replayed"),
        (200, ""),
        (400, "asked_to_fail"),
        (200, ""),
        (402, "insufficient_balance"),
        (200, ""),
        (403, "quota_exceeded"),
    ]
    # Another consumer's charged call of the same app.
    await top_up(client, m.admin, other.workspace_id, PRICE)
    _, other_secret = await app_key(client, other, m.app_id)
    assert await _call(client, other_secret, m.app_id, "priced") == (200, "")
    await request_log_buffer(app.state.gateway_state).flush()

    # The consumer: its 9 calls and 2 runs, never the other consumer's.
    statuses = [200, 200, 200, 200, 400, 200, 402, 200, 403]
    apis = ["priced", "priced", "priced", "free", "priced", "priced", "priced", "free", "free"]
    assert await _logs(client, consumer) == [("(workflow)", 200)] * 2 + list(
        zip(apis, statuses, strict=True)
    )
    assert await _pie(client, consumer, "calls", groupBy="api") == {
        f"{m.app_id}/priced": 6,
        f"{m.app_id}/free": 3,
        f"{own}/(workflow)": 2,
    }
    assert await _pie(client, consumer, "calls", groupBy="api", outcome="success") == {
        f"{m.app_id}/priced": 4,
        f"{m.app_id}/free": 2,
        f"{own}/(workflow)": 2,
    }
    assert await _pie(client, consumer, "calls", outcome="failure") == {m.app_id: 3}
    assert await _pie(client, consumer, "spend") == {m.app_id: 3 * PRICE, own: 2}
    assert await _pie(client, consumer, "earnings") == {}
    assert await _pie(client, consumer, "calls", scope="builder") == {own: 2}
    assert await _calls_used(client, consumer) == 6  # 4 answered priced calls (1 replay), 2 free
    assert await balances(client, consumer) == {"balance": 0, "earnings": 0}

    # The builder: every call to its app, by both consumers; earnings = price - cost per charge.
    assert await _pie(client, builder, "calls", scope="builder") == {m.app_id: 10}
    assert await _pie(client, builder, "calls", scope="builder", outcome="success") == {m.app_id: 7}
    assert await _pie(client, builder, "earnings") == {m.app_id: 4 * (PRICE - 1)}
    assert await _pie(client, builder, "spend") == {}
    assert await _calls_used(client, builder) == 0
    page = data_of(
        await client.get("/api/v1/request-logs?scope=builder&pageSize=100", headers=builder.headers)
    )
    callers = [row["callerWorkspaceId"] for row in page["list"]]
    assert sorted(callers) == sorted([consumer.workspace_id] * 9 + [other.workspace_id])
    assert await balances(client, builder) == {"balance": 0, "earnings": 4 * (PRICE - 1)}

    # The platform: the cost of every charged call and run.
    wallets = data_of(await client.get("/api/v1/admin/wallets", headers=m.admin.headers))["list"]
    [revenue] = [w["balance"] for w in wallets if w["kind"] == "revenue"]
    assert revenue == 4 * 1 + 2
    await ledger_invariants(app)
    assert_error(
        await client.get(
            "/api/v1/usage/earnings",
            headers={**consumer.headers, "X-Workspace-Id": builder.workspace_id},
        ),
        404,
        "workspace_not_found",
    )
