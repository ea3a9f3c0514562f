"""Bad input to the billing routes is refused with a clear 4xx and changes nothing: amounts that
are not whole positive RU within the cap, unknown fields, other tenants' wallets and workspaces,
roles too low, more than was earned, a withdrawal decided twice."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.billing.models import MAX_AMOUNT
from apiforge.core.settings import Settings
from tests.e2e._billing import PRICE, Market, invoke, ledger_invariants, market, top_up
from tests.e2e._workspaces import add_member, assert_error, data_of, new_workspace
from tests.factories import register

BAD_AMOUNTS: list[Any] = [0, -1, -PRICE, MAX_AMOUNT + 1, 10**30, 1.5, "10", True, None, [5]]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def _snapshot(app: FastAPI, client: AsyncClient, m: Market) -> Any:
    wallets = await ledger_invariants(app)
    entries = [
        data_of(await client.get("/api/v1/ledger-entries?pageSize=100", headers=u.headers))
        for u in (m.consumer, m.builder)
    ]
    withdrawals = data_of(await client.get("/api/v1/admin/withdrawals", headers=m.admin.headers))
    return wallets, entries, withdrawals


async def _earn(client: AsyncClient, m: Market, calls: int) -> None:
    await top_up(client, m.admin, m.consumer.workspace_id, calls * PRICE)
    assert [await invoke(client, m) for _ in range(calls)] == [200] * calls


@pytest.mark.parametrize("amount", BAD_AMOUNTS)
async def test_bad_amounts_are_refused(app: FastAPI, client: AsyncClient, amount: Any) -> None:
    m = await market(app, client)
    await _earn(client, m, 2)
    before = await _snapshot(app, client, m)
    ws = m.consumer.workspace_id
    refused = [
        await client.post(
            f"/api/v1/admin/wallets/{ws}/credits", json={"amount": amount}, headers=m.admin.headers
        ),
        await client.post(
            "/api/v1/redemptions", json={"amount": amount}, headers=m.builder.headers
        ),
        await client.post(
            "/api/v1/withdrawals", json={"amount": amount}, headers=m.builder.headers
        ),
    ]
    for response in refused:
        data = assert_error(response, 400, "invalid_input")
        assert data["errors"][0]["field"] == "amount", data
    assert await _snapshot(app, client, m) == before


async def test_malformed_and_unknown_fields(app: FastAPI, client: AsyncClient) -> None:
    m = await market(app, client)
    await _earn(client, m, 1)
    before = await _snapshot(app, client, m)
    ws = m.consumer.workspace_id
    url = f"/api/v1/admin/wallets/{ws}/credits"
    assert_error(
        await client.post(url, json={"amount": 5, "balance": 10**6}, headers=m.admin.headers),
        400,
        "invalid_input",
    )
    assert_error(
        await client.post(url, json={}, headers=m.admin.headers), 400, "missing_parameters"
    )
    response = await client.post(
        url,
        content=b'{"amount": 5',
        headers={**m.admin.headers, "Content-Type": "application/json"},
    )
    assert_error(response, 400, "malformed_json")
    for body in ({"amount": 1, "wallet": "x"}, {"amount": 1, "status": "approved"}):
        assert_error(
            await client.post("/api/v1/withdrawals", json=body, headers=m.builder.headers),
            400,
            "invalid_input",
        )
    assert await _snapshot(app, client, m) == before


async def test_other_tenants_and_roles(app: FastAPI, client: AsyncClient) -> None:
    m = await market(app, client)
    await _earn(client, m, 3)
    stranger = await register(client)
    before = await _snapshot(app, client, m)
    builder_ws = m.builder.workspace_id
    # another workspace's wallets and ledger are not visible (the same 404 as an unknown id)
    for path in ("/api/v1/wallets", "/api/v1/ledger-entries", "/api/v1/withdrawals"):
        response = await client.get(
            path, headers={**stranger.headers, "X-Workspace-Id": builder_ws}
        )
        assert_error(response, 404, "workspace_not_found")
    # only admins top up, and only existing workspaces
    url = f"/api/v1/admin/wallets/{stranger.workspace_id}/credits"
    assert_error(
        await client.post(url, json={"amount": 5}, headers=stranger.headers), 403, "admin_required"
    )
    for unknown in ("0" * 26, "nope", "platform.revenue.........."):
        response = await client.post(
            f"/api/v1/admin/wallets/{unknown}/credits", json={"amount": 5}, headers=m.admin.headers
        )
        assert_error(response, 404, "workspace_not_found")
    # redeeming into a workspace the builder doesn't belong to, or stealing another's earnings
    response = await client.post(
        "/api/v1/redemptions",
        json={"amount": 1, "targetWorkspaceId": stranger.workspace_id},
        headers=m.builder.headers,
    )
    assert_error(response, 404, "workspace_not_found")
    response = await client.post(
        "/api/v1/redemptions",
        json={"amount": 1},
        headers={**stranger.headers, "X-Workspace-Id": builder_ws},
    )
    assert_error(response, 404, "workspace_not_found")
    # a viewer or editor of the earning workspace can't move its money
    team = await new_workspace(client, m.builder, "Team")
    for role in ("viewer", "editor"):
        member = await register(client)
        await add_member(client, m.builder, team, member, role)
        headers = {**member.headers, "X-Workspace-Id": team}
        for path in ("/api/v1/redemptions", "/api/v1/withdrawals"):
            response = await client.post(path, json={"amount": 1}, headers=headers)
            assert_error(response, 403, "insufficient_role")
    # a consumer's key is not a console credential: no wallet access through the gateway key
    response = await client.get("/api/v1/wallets", headers={"X-Api-Key": m.secret})
    assert response.status_code == 401
    assert await _snapshot(app, client, m) == before


async def test_more_than_earned_and_decided_twice(app: FastAPI, client: AsyncClient) -> None:
    m = await market(app, client)
    await _earn(client, m, 2)
    earned = data_of(await client.get("/api/v1/earnings", headers=m.builder.headers))["total"]
    before = await _snapshot(app, client, m)
    for path in ("/api/v1/redemptions", "/api/v1/withdrawals"):
        response = await client.post(path, json={"amount": earned + 1}, headers=m.builder.headers)
        assert_error(response, 402, "insufficient_balance")
    assert await _snapshot(app, client, m) == before
    # a requested withdrawal holds its amount: it can't also be redeemed
    response = await client.post(
        "/api/v1/withdrawals", json={"amount": earned}, headers=m.builder.headers
    )
    withdrawal_id = data_of(response)["id"]
    response = await client.post(
        "/api/v1/redemptions", json={"amount": 1}, headers=m.builder.headers
    )
    assert_error(response, 402, "insufficient_balance")
    url = f"/api/v1/admin/withdrawals/{withdrawal_id}"
    assert_error(
        await client.patch(url, json={"status": "approved"}, headers=m.builder.headers),
        403,
        "admin_required",
    )
    assert_error(
        await client.patch(url, json={"status": "requested"}, headers=m.admin.headers),
        400,
        "invalid_input",
    )
    decided = await client.patch(url, json={"status": "rejected"}, headers=m.admin.headers)
    assert data_of(decided)["status"] == "rejected"
    after_decision = await _snapshot(app, client, m)
    for status in ("approved", "rejected"):
        again = await client.patch(url, json={"status": status}, headers=m.admin.headers)
        assert_error(again, 409, "withdrawal_already_decided")
    assert_error(
        await client.patch(
            "/api/v1/admin/withdrawals/" + "0" * 26,
            json={"status": "approved"},
            headers=m.admin.headers,
        ),
        404,
        "withdrawal_not_found",
    )
    assert await _snapshot(app, client, m) == after_decision


async def test_bad_ledger_filters(app: FastAPI, client: AsyncClient) -> None:
    m = await market(app, client)
    headers = m.consumer.headers
    for query in (
        "kind=steal",
        "walletKind=issuance",
        "from=yesterday",
        "sort=amount",
        "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "pageSize=100000",
    ):
        response = await client.get(f"/api/v1/ledger-entries?{query}", headers=headers)
        assert response.status_code == 400, (query, response.text)
