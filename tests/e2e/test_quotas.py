"""Plan quotas end to end: each quota refuses with 403 `quota_exceeded` naming it, nothing is
created past it, every refusal is noted (one row per workspace, quota and minute) for admins at
`/api/v1/admin/quota-hits`, `/user/plans` shows real usage, and the gateway's monthly call quota
costs no database round trip per call."""

import asyncio
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient, Response
from sqlalchemy import func, select

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.datasets.models import Record
from apiforge.gateway.stages.log import request_log_buffer
from apiforge.plans.meter import quota_meter
from apiforge.plans.models import FREE_PLAN_QUOTAS, Plan
from tests._servers import running_servers
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import app_key, call, counting, notes_app
from tests.e2e._workspaces import add_member, assert_error, data_of, team
from tests.factories import User, make_admin, register

BIG = 2**53 - 1


async def _plan(client: AsyncClient, admin: User, code: str, **quotas: int) -> str:
    body = {"code": code, "name": code.title(), "quotas": quotas}
    plan_id: str = data_of(
        await client.post("/api/v1/admin/plans", json=body, headers=admin.headers)
    )["id"]
    return plan_id


async def _move(client: AsyncClient, admin: User, workspace_id: str, plan_id: str) -> None:
    response = await client.put(
        f"/api/v1/admin/workspaces/{workspace_id}/plan",
        json={"planId": plan_id},
        headers=admin.headers,
    )
    assert data_of(response) == {"id": workspace_id, "planId": plan_id}


async def _on_plan(
    app: FastAPI, client: AsyncClient, workspace_id: str, code: str, **quotas: int
) -> tuple[User, str]:
    """An admin, and `workspace_id` moved to a new plan with these quotas."""
    admin = await make_admin(app, client)
    plan_id = await _plan(client, admin, code, **quotas)
    await _move(client, admin, workspace_id, plan_id)
    return admin, plan_id


async def _hits(
    app: FastAPI, client: AsyncClient, admin: User, **query: Any
) -> list[dict[str, Any]]:
    await quota_meter(app.state.engine).hits.flush()
    response = await client.get("/api/v1/admin/quota-hits", params=query, headers=admin.headers)
    hits: list[dict[str, Any]] = data_of(response)["list"]
    return hits


def _by_minute(hits: list[dict[str, Any]]) -> dict[str, Any]:
    """The rows of one quota, workspace and operation as one: refusals are counted in one row
    per UTC minute, so a burst that crosses a minute's end has two rows (each its own minute,
    checked here), their `hits` summed."""
    assert hits, "no quota hit noted"
    minutes = [hit["createdTime"][:16] for hit in hits]
    assert len(set(minutes)) == len(minutes), hits  # never two rows for one minute
    keys = ("workspaceId", "planId", "quota", "operation", "limit")
    assert len({tuple(hit[k] for k in keys) for hit in hits}) == 1, hits
    return {**hits[0], "hits": sum(hit["hits"] for hit in hits)}


def _refused(response: Response, quota: str, limit: int) -> dict[str, Any]:
    data = assert_error(response, 403, "quota_exceeded")
    assert (data["quota"], data["limit"]) == (quota, limit)
    assert quota in response.json()["message"]
    return data


async def _usage(client: AsyncClient, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    plans = data_of(await client.get("/api/v1/user/plans", headers=headers))
    return {u["quota"]: u for u in plans["usage"]}


async def _records(app: FastAPI, partition: str) -> int:
    async with app.state.engine.connect() as connection:
        stmt = select(func.count()).select_from(Record).where(Record.partition == partition)
        return int(await connection.scalar(stmt) or 0)


async def _dev_call(
    client: AsyncClient, user: User, app_id: str, api: str, **args: Any
) -> Response:
    body = {"appId": app_id, "api": api, "version": "dev", "args": args}
    return await client.post("/api/v1/invocations", json=body, headers=user.headers)


# --- counted quotas of the management API ---------------------------------------------------------


async def test_members_quota_refuses_and_records_the_hit(app: FastAPI, client: AsyncClient) -> None:
    owner, workspace_id, _ = await team(client, "viewer")
    admin, plan_id = await _on_plan(app, client, workspace_id, "duo", members=2)
    extra = await register(client)
    for _ in range(2):
        response = await client.post(
            f"/api/v1/workspaces/{workspace_id}/members",
            json={"email": extra.email, "role": "viewer"},
            headers=owner.headers,
        )
        assert _refused(response, "members", 2)["used"] == 2
    hits = await _hits(app, client, admin, workspaceId=workspace_id)
    hit = _by_minute(hits)  # two refusals in one minute: one row that counts them
    assert {
        k: hit[k] for k in ("workspaceId", "planId", "quota", "operation", "limit", "used")
    } == {
        "workspaceId": workspace_id,
        "planId": plan_id,
        "quota": "members",
        "operation": "members.add",
        "limit": 2,
        "used": 2,
    }
    assert hit["hits"] == 2
    assert hit["createdTime"].endswith("Z")
    assert hit["lastTime"] >= hit["createdTime"]


async def test_apps_quota_refuses_the_app_past_it(app: FastAPI, client: AsyncClient) -> None:
    owner = await register(client)
    admin, _ = await _on_plan(app, client, owner.workspace_id, "solo", apps=1)
    await new_app(client, owner.headers, "First")
    response = await client.post("/api/v1/apps", json={"name": "Second"}, headers=owner.headers)
    _refused(response, "apps", 1)
    listed = data_of(await client.get("/api/v1/apps", headers=owner.headers))
    assert [a["name"] for a in listed["list"]] == ["First"]
    assert (await _usage(client, owner.headers))["apps"] == {
        "quota": "apps",
        "limit": 1,
        "used": 1,
        "warning": 1,
        "resetTime": None,
    }
    [hit] = await _hits(app, client, admin, workspaceId=owner.workspace_id, quota="apps")
    assert hit["operation"] == "apps.create"


async def test_workspaces_quota_hit_is_noted_against_the_personal_workspace(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    admin, _ = await _on_plan(app, client, owner.workspace_id, "single", workspaces=1)
    response = await client.post("/api/v1/workspaces", json={"name": "T"}, headers=owner.headers)
    _refused(response, "workspaces", 1)
    [hit] = await _hits(app, client, admin, quota="workspaces", workspaceId=owner.workspace_id)
    assert hit["operation"] == "workspaces.create"


# --- records and stored bytes -------------------------------------------------------------------


async def test_records_quota_refuses_gateway_inserts_in_the_callers_partition(
    app: FastAPI, client: AsyncClient
) -> None:
    builder, consumer = await register(client), await register(client)
    app_id = await notes_app(client, builder, visibility="public")
    _, secret = await app_key(client, consumer, app_id)
    admin, plan_id = await _on_plan(app, client, consumer.workspace_id, "tiny", records=2)
    for text in ("one", "two"):
        assert (await call(client, secret, app_id, "addNote", {"text": text})).status_code == 200
    refused = await call(client, secret, app_id, "addNote", {"text": "three"})
    data = _refused(refused, "records", 2)
    assert data["stepId"] == "note"
    assert await _records(app, consumer.workspace_id) == 2
    # The builder's own partition is on the free plan: not affected by the consumer's quota.
    assert (await _dev_call(client, builder, app_id, "addNote", text="mine")).status_code == 200
    usage = await _usage(client, consumer.headers)
    assert (usage["records"]["used"], usage["records"]["warning"]) == (2, 1)
    [hit] = await _hits(app, client, admin, workspaceId=consumer.workspace_id)
    assert (hit["quota"], hit["operation"], hit["planId"]) == ("records", "records.insert", plan_id)


async def test_records_quota_refuses_management_inserts(app: FastAPI, client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    body = {"appId": app_id, "name": "notes", "fields": [{"name": "text", "type": "string"}]}
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))[
        "id"
    ]
    await _on_plan(app, client, owner.workspace_id, "one-record", records=1)
    url = f"/api/v1/datasets/{dataset_id}/records"
    data_of(await client.post(url, json={"text": "a"}, headers=owner.headers))
    _refused(await client.post(url, json={"text": "b"}, headers=owner.headers), "records", 1)
    assert await _records(app, owner.workspace_id) == 1


async def test_storage_quota_counts_the_bytes_records_hold(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    body = {"appId": app_id, "name": "notes", "fields": [{"name": "text", "type": "string"}]}
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=owner.headers))[
        "id"
    ]
    url = f"/api/v1/datasets/{dataset_id}/records"
    # {"text":"<n chars>"} is 11 + n bytes as stored.
    await _on_plan(app, client, owner.workspace_id, "small", storageBytes=100)
    first = data_of(await client.post(url, json={"text": "a" * 39}, headers=owner.headers))["id"]
    data_of(await client.post(url, json={"text": "b" * 39}, headers=owner.headers))  # 100 bytes
    refused = await client.post(url, json={"text": ""}, headers=owner.headers)
    assert _refused(refused, "storageBytes", 100)["used"] == 100
    # Growing a record past the quota is refused too; shrinking one is allowed.
    grown = await client.patch(f"{url}/{first}", json={"text": "a" * 40}, headers=owner.headers)
    _refused(grown, "storageBytes", 100)
    data_of(await client.patch(f"{url}/{first}", json={"text": "a"}, headers=owner.headers))
    usage = await _usage(client, owner.headers)
    assert (usage["storageBytes"]["used"], usage["storageBytes"]["limit"]) == (62, 100)
    assert usage["records"]["used"] == 2


# --- calls per month on the gateway -------------------------------------------------------------


async def test_calls_per_month_refuses_past_the_quota_without_a_query_per_call(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    await new_api(
        client, owner.headers, app_id, "ping", steps=[{"id": "p", "type": "set", "value": 1}]
    )
    admin, plan_id = await _on_plan(app, client, owner.workspace_id, "trial", callsPerMonth=3)
    assert (await _dev_call(client, owner, app_id, "ping")).status_code == 200  # loads the meter
    with (
        counting(app, "request_logs") as counts,
        counting(app, "plans") as plan_reads,
        counting(app, "quota_hits") as hit_writes,
    ):
        for _ in range(2):
            assert (await _dev_call(client, owner, app_id, "ping")).status_code == 200
        for _ in range(25):
            refused = await _dev_call(client, owner, app_id, "ping")
            assert _refused(refused, "callsPerMonth", 3)["used"] == 3
    assert [s for s in counts if "INSERT" not in s] == []
    assert plan_reads == []
    assert hit_writes == []  # refusals are noted in memory, written after their minute
    hits = await _hits(app, client, admin, workspaceId=owner.workspace_id, quota="callsPerMonth")
    hit = _by_minute(hits)
    assert (hit["hits"], hit["operation"], hit["planId"]) == (25, "invocations", plan_id)
    # Refused calls are not counted; moving to a larger plan applies at once on this node.
    await request_log_buffer(app.state.gateway_state).flush()
    assert (await _usage(client, owner.headers))["callsPerMonth"]["used"] == 3
    bigger = await _plan(client, admin, "bigger", callsPerMonth=4)
    await _move(client, admin, owner.workspace_id, bigger)
    assert (await _dev_call(client, owner, app_id, "ping")).status_code == 200
    _refused(await _dev_call(client, owner, app_id, "ping"), "callsPerMonth", 4)


async def test_a_fresh_process_counts_the_calls_already_logged(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    """Another server process (or a restart) loads the month's count from the request log."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    await new_api(
        client, owner.headers, app_id, "ping", steps=[{"id": "p", "type": "set", "value": 1}]
    )
    await _on_plan(app, client, owner.workspace_id, "pair", callsPerMonth=2)
    for _ in range(2):
        assert (await _dev_call(client, owner, app_id, "ping")).status_code == 200
    await request_log_buffer(app.state.gateway_state).flush()
    other = create_app(settings)
    try:
        async with AsyncClient(transport=ASGITransport(app=other), base_url="http://t") as second:
            _refused(await _dev_call(second, owner, app_id, "ping"), "callsPerMonth", 2)
    finally:
        await shutdown(other)


async def test_unlimited_calls_never_count(app: FastAPI, client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    await new_api(
        client, owner.headers, app_id, "ping", steps=[{"id": "p", "type": "set", "value": 1}]
    )
    await _on_plan(app, client, owner.workspace_id, "open", callsPerMonth=-1)
    with counting(app, "request_logs") as counts:
        for _ in range(3):
            assert (await _dev_call(client, owner, app_id, "ping")).status_code == 200
    assert [s for s in counts if "INSERT" not in s] == []


# --- admin views and bad input ------------------------------------------------------------------


async def test_quota_hits_are_for_admins_and_filters_are_checked(
    app: FastAPI, client: AsyncClient
) -> None:
    user = await register(client)
    assert_error(
        await client.get("/api/v1/admin/quota-hits", headers=user.headers), 403, "admin_required"
    )
    admin = await make_admin(app, client)
    for query in (
        {"quota": "bogus"},
        {"from": "yesterday"},
        {"from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        {"pageSize": "1000000"},
        {"sort": "password"},
        {"workspaceId": "x" * 27},
    ):
        response = await client.get("/api/v1/admin/quota-hits", params=query, headers=admin.headers)
        assert response.status_code == 400, (query, response.text)
    empty = await client.get(
        "/api/v1/admin/quota-hits", params={"workspaceId": user.workspace_id}, headers=admin.headers
    )
    assert data_of(empty)["list"] == []


@pytest.mark.parametrize(
    "quotas",
    [
        {"records": -2},
        {"bogus": 5},
        {"callsPerMonth": BIG + 1},
        {"storageBytes": 10**30},
        {"apps": "5"},
        {"members": 1.5},
        {"members": True},
        {"records": None},
    ],
)
async def test_bad_quota_values_are_refused_and_change_nothing(
    app: FastAPI, client: AsyncClient, quotas: dict[str, Any]
) -> None:
    admin = await make_admin(app, client)
    plan_id = await _plan(client, admin, "kept", records=10)
    before = data_of(await client.get(f"/api/v1/admin/plans/{plan_id}", headers=admin.headers))
    create = await client.post(
        "/api/v1/admin/plans",
        json={"code": "bad", "name": "Bad", "quotas": quotas},
        headers=admin.headers,
    )
    assert_error(create, 400, "invalid_input")
    patch = await client.patch(
        f"/api/v1/admin/plans/{plan_id}", json={"quotas": quotas}, headers=admin.headers
    )
    assert_error(patch, 400, "invalid_input")
    after = data_of(await client.get(f"/api/v1/admin/plans/{plan_id}", headers=admin.headers))
    assert after == before
    codes = [
        p["code"]
        for p in data_of(await client.get("/api/v1/admin/plans", headers=admin.headers))["list"]
    ]
    assert "bad" not in codes


async def test_moving_a_workspace_refuses_unknown_ids_and_non_admins(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    admin = await make_admin(app, client)
    plan_id = await _plan(client, admin, "target", apps=1)
    url = f"/api/v1/admin/workspaces/{owner.workspace_id}/plan"
    # The owner can't move their own workspace (not an admin), not even to a public plan.
    assert_error(
        await client.put(url, json={"planId": plan_id}, headers=owner.headers),
        403,
        "admin_required",
    )
    assert_error(
        await client.put(url, json={"planId": "0" * 26}, headers=admin.headers),
        404,
        "plan_not_found",
    )
    for workspace in ("0" * 26, "not-an-id", "x" * 300):
        response = await client.put(
            f"/api/v1/admin/workspaces/{workspace}/plan",
            json={"planId": plan_id},
            headers=admin.headers,
        )
        assert response.status_code == 404, response.text
    bad = await client.put(url, json={"planId": plan_id, "force": True}, headers=admin.headers)
    assert_error(bad, 400, "invalid_input")
    current = data_of(await client.get("/api/v1/user/plans", headers=owner.headers))["currentPlan"]
    assert current["code"] == "free"
    assert current["quotas"] == FREE_PLAN_QUOTAS


async def test_plan_quota_changes_apply_at_once(app: FastAPI, client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    await new_api(
        client, owner.headers, app_id, "ping", steps=[{"id": "p", "type": "set", "value": 1}]
    )
    admin, plan_id = await _on_plan(app, client, owner.workspace_id, "edit", callsPerMonth=1)
    assert (await _dev_call(client, owner, app_id, "ping")).status_code == 200
    _refused(await _dev_call(client, owner, app_id, "ping"), "callsPerMonth", 1)
    response = await client.patch(
        f"/api/v1/admin/plans/{plan_id}",
        json={"quotas": {"callsPerMonth": 2}},
        headers=admin.headers,
    )
    data_of(response)
    assert (await _dev_call(client, owner, app_id, "ping")).status_code == 200
    async with app.state.engine.connect() as connection:
        quotas = await connection.scalar(select(Plan.quotas).where(Plan.id == plan_id))
    assert quotas["callsPerMonth"] == 2


async def test_members_usage_and_warning_follow_the_plan(app: FastAPI, client: AsyncClient) -> None:
    owner, workspace_id, _ = await team(client)
    await _on_plan(app, client, workspace_id, "five", members=5)
    headers = {**owner.headers, "X-Workspace-Id": workspace_id}
    for _ in range(3):
        await add_member(client, owner, workspace_id, await register(client), "viewer")
    assert (await _usage(client, headers))["members"] == {
        "quota": "members",
        "limit": 5,
        "used": 4,
        "warning": 1,
        "resetTime": None,
    }


async def test_concurrent_app_creations_cannot_overshoot_the_apps_quota(
    app: FastAPI, client: AsyncClient
) -> None:
    owner = await register(client)
    await _on_plan(app, client, owner.workspace_id, "pair-apps", apps=2)

    async def create(n: int) -> int:
        response = await client.post("/api/v1/apps", json={"name": f"A{n}"}, headers=owner.headers)
        return response.status_code

    statuses = await asyncio.gather(*(create(n) for n in range(5)))
    assert sorted(statuses) == [200, 200, 403, 403, 403]
    assert data_of(await client.get("/api/v1/apps", headers=owner.headers))["totalCount"] == 2


async def test_two_server_processes_share_the_monthly_call_quota(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    """Each process counts its own calls at once and learns the others' from the request log
    at its next snapshot; after an idle spell it re-reads before answering."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    steps = [{"id": "p", "type": "set", "value": 1}]
    await new_api(client, owner.headers, app_id, "ping", steps=steps)
    admin, plan_id = await _on_plan(app, client, owner.workspace_id, "shared", callsPerMonth=4)
    fast = {"APIFORGE_QUOTA_REFRESH_SECONDS": "0.2"}
    async with (
        running_servers(settings, count=2, extra_env=fast) as urls,
        AsyncClient(base_url=urls[0], timeout=30) as first,
        AsyncClient(base_url=urls[1], timeout=30) as second,
    ):
        for server in (first, second, first, second):
            assert (await _dev_call(server, owner, app_id, "ping")).status_code == 200
        await asyncio.sleep(1.5)  # the logs are written; both snapshots are long stale
        for server in (first, second):
            _refused(await _dev_call(server, owner, app_id, "ping"), "callsPerMonth", 4)
    # Each process wrote its refusal when it stopped.
    response = await client.get(
        "/api/v1/admin/quota-hits",
        params={"workspaceId": owner.workspace_id},
        headers=admin.headers,
    )
    hits = data_of(response)["list"]
    assert [(h["quota"], h["planId"], h["hits"]) for h in hits] == [
        ("callsPerMonth", plan_id, 1),
        ("callsPerMonth", plan_id, 1),
    ]


@pytest.mark.parametrize("quota", ["requestsPerMinute", "concurrentRequests"])
async def test_a_plan_allowing_no_calls_notes_its_refusals(
    app: FastAPI, client: AsyncClient, quota: str
) -> None:
    """A rate quota of 0 refuses every call with 403 (retrying never helps), and like every
    quota refusal it is noted in the quota-hit log and counted in the metric."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    await new_api(
        client, owner.headers, app_id, "ping", steps=[{"id": "p", "type": "set", "value": 1}]
    )
    admin, plan_id = await _on_plan(app, client, owner.workspace_id, "closed", **{quota: 0})
    metrics_before = (await client.get("/metrics")).text
    for _ in range(3):
        _refused(await _dev_call(client, owner, app_id, "ping"), quota, 0)
    hit = _by_minute(await _hits(app, client, admin, workspaceId=owner.workspace_id, quota=quota))
    assert (hit["hits"], hit["operation"], hit["planId"], hit["limit"]) == (
        3,
        "invocations",
        plan_id,
        0,
    )
    sample = f'apiforge_quota_refusals_total{{quota="{quota}"}}'
    assert _sample(metrics_before, sample) + 3 == _sample(
        (await client.get("/metrics")).text, sample
    )


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0
