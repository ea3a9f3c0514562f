"""Earnings, redemptions, withdrawals and the spend/earnings usage charts."""

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from apiforge.billing.models import Wallet
from apiforge.core.settings import Settings
from apiforge.tools.clock import utcnow
from tests.e2e._billing import COST, PRICE, balances, invoke, ledger_invariants, market, top_up
from tests.e2e._keys import create_key
from tests.e2e._workspaces import assert_error, data_of, new_workspace
from tests.factories import register


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def test_earnings_redemptions_and_withdrawals(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The calls' ledger entries are stamped when the call started (its request-log row): at
    # noon of today here, so a UTC midnight during the test cannot split them or move the day.
    noon = utcnow().replace(hour=12, minute=0, second=0, microsecond=0)
    monkeypatch.setattr("apiforge.gateway.stages.log.utcnow", lambda: noon)
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, 3 * PRICE)
    assert [await invoke(client, m) for _ in range(3)] == [200] * 3
    profit = PRICE - COST

    report = data_of(await client.get("/api/v1/earnings", headers=m.builder.headers))
    today = noon.strftime("%Y-%m-%d")
    assert report == {
        "total": 3 * profit,
        "totalCount": 1,
        "totalPage": 1,
        "pageNo": 1,
        "pageSize": 20,
        "list": [
            {"day": today, "appId": m.app_id, "api": "priced", "calls": 3, "amount": 3 * profit}
        ],
    }
    # a consumer earns nothing from what it calls
    assert data_of(await client.get("/api/v1/earnings", headers=m.consumer.headers))["total"] == 0

    # redeem into the builder's own wallet, then into a team wallet it belongs to
    team = await new_workspace(client, m.builder, "Team")
    redeemed = await client.post(
        "/api/v1/redemptions", json={"amount": 5}, headers=m.builder.headers
    )
    first = data_of(redeemed)["id"]
    body = {"amount": 4, "targetWorkspaceId": team}
    data_of(await client.post("/api/v1/redemptions", json=body, headers=m.builder.headers))
    assert await balances(client, m.builder) == {"balance": 5, "earnings": 3 * profit - 9}
    assert await balances(client, m.builder, team) == {"balance": 4, "earnings": 0}
    listed = data_of(await client.get("/api/v1/redemptions", headers=m.builder.headers))
    assert [(r["amount"], r["targetWorkspaceId"]) for r in listed["list"]] == [
        (4, team),
        (5, m.builder.workspace_id),
    ]
    assert listed["list"][1]["id"] == first

    # two withdrawals: one approved (leaves through payouts), one rejected (back to earnings)
    left = 3 * profit - 9
    ids = []
    for amount in (6, left - 6):
        response = await client.post(
            "/api/v1/withdrawals", json={"amount": amount}, headers=m.builder.headers
        )
        ids.append(data_of(response)["id"])
    assert await balances(client, m.builder) == {"balance": 5, "earnings": 0}
    pending = data_of(
        await client.get("/api/v1/admin/withdrawals?status=requested", headers=m.admin.headers)
    )
    assert {w["id"] for w in pending["list"]} == set(ids)
    for withdrawal_id, status in zip(ids, ("approved", "rejected"), strict=True):
        response = await client.patch(
            f"/api/v1/admin/withdrawals/{withdrawal_id}",
            json={"status": status, "note": "checked"},
            headers=m.admin.headers,
        )
        decided = data_of(response)
        assert decided["status"] == status
        assert decided["decisionNote"] == "checked"
        assert decided["decidedTime"] is not None
    assert await balances(client, m.builder) == {"balance": 5, "earnings": left - 6}
    own = data_of(await client.get("/api/v1/withdrawals", headers=m.builder.headers))
    assert sorted(w["status"] for w in own["list"]) == ["approved", "rejected"]
    kinds = data_of(
        await client.get(
            "/api/v1/ledger-entries?walletKind=earnings&pageSize=100", headers=m.builder.headers
        )
    )
    assert sorted({e["kind"] for e in kinds["list"]}) == [
        "call",
        "redemption",
        "withdrawal_rejected",
        "withdrawal_request",
    ]
    platform = data_of(await client.get("/api/v1/admin/wallets", headers=m.admin.headers))
    assert {w["kind"]: w["balance"] for w in platform["list"]} == {
        "escrow": 0,
        "issuance": -3 * PRICE,
        "payouts": 6,
        "revenue": 3 * COST,
    }
    assert_error(
        await client.get("/api/v1/admin/wallets", headers=m.builder.headers), 403, "admin_required"
    )
    await ledger_invariants(app)


async def test_spend_and_earnings_charts(app: FastAPI, client: AsyncClient) -> None:
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, 5 * PRICE)
    assert [await invoke(client, m) for _ in range(4)] == [200] * 4
    assert await invoke(client, m, fail=True) == 400  # failed: neither spent nor earned

    spend = data_of(
        await client.get("/api/v1/usage/spend?granularity=hour", headers=m.consumer.headers)
    )
    assert len(spend["xAxis"]) == 24
    assert [s["id"] for s in spend["series"]] == [m.app_id]
    assert spend["series"][0]["name"] == "Shop"  # a public app is named
    data = spend["series"][0]["data"]
    assert len(data) == 24
    assert sum(data) == 4 * PRICE
    assert data.count(0) >= 23  # zero-filled

    earned = data_of(
        await client.get("/api/v1/usage/earnings?groupBy=api", headers=m.builder.headers)
    )
    assert len(earned["xAxis"]) == 30
    assert [s["id"] for s in earned["series"]] == [f"{m.app_id}/priced"]
    assert earned["series"][0]["name"] == "Shop/priced"
    assert sum(earned["series"][0]["data"]) == 4 * (PRICE - COST)

    shares = data_of(await client.get("/api/v1/usage/spend?chart=pie", headers=m.consumer.headers))
    assert shares == {"series": [{"id": m.app_id, "name": "Shop", "value": 4 * PRICE}]}
    nothing = data_of(
        await client.get("/api/v1/usage/earnings?chart=pie", headers=m.consumer.headers)
    )
    assert nothing == {"series": []}
    other = data_of(
        await client.get(f"/api/v1/usage/spend?appId={'0' * 26}", headers=m.consumer.headers)
    )
    assert other["series"] == []
    for query in ("granularity=minute", "chart=bar", "from=2020-01-01&granularity=hour", "top=0"):
        response = await client.get(f"/api/v1/usage/spend?{query}", headers=m.consumer.headers)
        assert response.status_code == 400, (query, response.text)
    assert_error(
        await client.get(
            "/api/v1/usage/earnings", headers={**m.consumer.headers, "X-Workspace-Id": m.app_id}
        ),
        404,
        "workspace_not_found",
    )


async def test_deleting_a_workspace_keeps_the_ledger_whole(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    team = await new_workspace(client, m.builder, "Team")
    await top_up(client, m.admin, team, 7)
    body = {"amount": 3}
    headers = {**m.builder.headers, "X-Workspace-Id": team}
    assert_error(await client.post("/api/v1/withdrawals", json=body, headers=headers), 402,
                 "insufficient_balance")  # fmt: skip
    response = await client.delete(f"/api/v1/workspaces/{team}", headers=m.builder.headers)
    assert response.status_code == 200, response.text
    wallets = await ledger_invariants(app)  # its wallets stay, unowned, with their entries
    assert sorted(wallets.values()).count(7) == 1
    assert_error(
        await client.post(
            f"/api/v1/admin/wallets/{team}/credits", json={"amount": 1}, headers=m.admin.headers
        ),
        404,
        "workspace_not_found",
    )


async def test_a_workspace_key_redeems_only_into_its_own_workspace(
    app: FastAPI, client: AsyncClient
) -> None:
    """A `ws-` key acts only in its workspace: redeeming its earnings into another workspace of
    its creator is the same 404 as an unknown workspace, and moves nothing; into its own
    workspace it works."""
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, 3 * PRICE)
    assert [await invoke(client, m) for _ in range(3)] == [200] * 3
    team = await new_workspace(client, m.builder, "Team")
    _, secret = await create_key(client, m.builder.headers, type="ws", role="admin")
    before = await balances(client, m.builder)
    body = {"amount": 1, "targetWorkspaceId": team}
    refused = await client.post("/api/v1/redemptions", json=body, headers={"X-Api-Key": secret})
    assert_error(refused, 404, "workspace_not_found")
    assert await balances(client, m.builder) == before
    assert await balances(client, m.builder, team) == {"balance": 0, "earnings": 0}
    own = {"amount": 1, "targetWorkspaceId": m.builder.workspace_id}
    data_of(await client.post("/api/v1/redemptions", json=own, headers={"X-Api-Key": secret}))
    assert (await balances(client, m.builder))["balance"] == before["balance"] + 1
    await ledger_invariants(app)


async def test_earnings_are_paged_with_the_total_of_the_whole_range(
    app: FastAPI, client: AsyncClient
) -> None:
    """One row per day, app and API: over a long range of a busy workspace that was every row
    at once (no page, no cap). Pages as every list; `total` still sums the whole range."""
    m = await market(app, client)
    apis = ["insert", "listed", "priced"]
    await top_up(client, m.admin, m.consumer.workspace_id, 10 * PRICE)
    assert [await invoke(client, m, api) for api in apis] == [200] * 3
    earned = sum(
        e["amount"]
        for e in data_of(
            await client.get(
                "/api/v1/ledger-entries", params={"kind": "call"}, headers=m.builder.headers
            )
        )["list"]
    )
    pages = []
    for page_no in (1, 2):
        query = {"pageSize": "2", "pageNo": str(page_no)}
        report = data_of(
            await client.get("/api/v1/earnings", params=query, headers=m.builder.headers)
        )
        assert (report["totalCount"], report["totalPage"], report["pageSize"]) == (3, 2, 2)
        assert report["total"] == earned
        pages.append([row["api"] for row in report["list"]])
    assert pages == [apis[:2], apis[2:]]
    refused = (
        ({"pageSize": "101"}, "pageSize", "invalid_input"),
        ({"sort": "bogus"}, "sort", "invalid_sort_field"),
    )
    for query, field, reason in refused:
        response = await client.get("/api/v1/earnings", params=query, headers=m.builder.headers)
        assert assert_error(response, 400, reason)["errors"][0]["field"] == field


async def test_reading_earnings_and_redemptions_creates_no_wallet(
    app: FastAPI, client: AsyncClient
) -> None:
    """Lists of what a workspace earned are reads: before it has wallets they are empty, and
    they create none (creating wallets writes, and grants the owner's welcome credits)."""
    owner = await register(client)
    for path in ("/api/v1/earnings", "/api/v1/redemptions"):
        page = data_of(await client.get(path, headers=owner.headers))
        assert page["list"] == []
        assert page["totalCount"] == 0
        assert page.get("total", 0) == 0
    async with app.state.engine.connect() as conn:
        query = (
            select(func.count())
            .select_from(Wallet)
            .where(Wallet.workspace_id == owner.workspace_id)
        )
        assert await conn.scalar(query) == 0
    assert data_of(await client.get("/api/v1/wallets", headers=owner.headers))  # created now
    async with app.state.engine.connect() as conn:
        assert await conn.scalar(query) == 2
    await ledger_invariants(app)
