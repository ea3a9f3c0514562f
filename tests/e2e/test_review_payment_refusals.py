"""Every 402 `insufficient_balance` says which wallet is short and by what it was asked
(`data.walletId`, `data.required`), whether a call, a redemption or a withdrawal refused it.
The call's carried only `price`; a movement's only `walletId`; a redemption out of earnings a
workspace never had carried nothing and read "Insufficient balance"."""

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.core.settings import Settings
from tests.e2e._apps import new_api
from tests.e2e._billing import PRICE, invoke, market, top_up
from tests.e2e._keys import create_key
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": 0})


async def _wallet_ids(client: AsyncClient, user: User) -> dict[str, str]:
    listed = data_of(await client.get("/api/v1/wallets", headers=user.headers))
    return {w["kind"]: w["id"] for w in listed["list"]}


async def test_a_calls_402_names_the_callers_wallet_and_the_price(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, PRICE - 1)
    response = await client.post(
        "/api/v1/invocations",
        json={"appId": m.app_id, "api": "priced", "version": "latest", "args": {}},
        headers={"X-Api-Key": m.secret},
    )
    data = assert_error(response, 402, "insufficient_balance")
    wallets = await _wallet_ids(client, m.consumer)
    assert data["walletId"] == wallets["balance"]
    assert data["required"] == data["price"] == PRICE
    # Once covered, the same call goes through (nothing was held by the refusal).
    await top_up(client, m.admin, m.consumer.workspace_id, 1)
    assert await invoke(client, m) == 200


async def test_a_movements_402_names_the_earnings_wallet_and_the_amount(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    # The builder has earned nothing yet: it has no earnings wallet to move out of.
    for url in ("/api/v1/redemptions", "/api/v1/withdrawals"):
        response = await client.post(url, json={"amount": 3}, headers=m.builder.headers)
        data = assert_error(response, 402, "insufficient_balance")
        assert data["walletId"] is None
        assert data["required"] == 3
        assert "no earnings" in response.json()["message"]
    # Earned some, asked for more.
    await top_up(client, m.admin, m.consumer.workspace_id, PRICE)
    assert await invoke(client, m) == 200
    earnings = (await _wallet_ids(client, m.builder))["earnings"]
    for url in ("/api/v1/redemptions", "/api/v1/withdrawals"):
        response = await client.post(url, json={"amount": PRICE * 5}, headers=m.builder.headers)
        data = assert_error(response, 402, "insufficient_balance")
        assert data["walletId"] == earnings
        assert data["required"] == PRICE * 5
        assert "does not cover" in response.json()["message"]


async def test_a_browser_callers_402_does_not_name_the_wallet(
    app: FastAPI, client: AsyncClient
) -> None:
    """A `pk-` key is the app's end users' (it ships in web pages): its 402 says what the call
    needs, but not which of the workspace's wallets is short — an internal id the end user has
    no use for. A server key's 402 for the same call still names it."""
    m = await market(app, client)
    public = {"public": True, "mode": "none"}
    steps = [{"id": "hello", "type": "set", "value": "hi"}]
    await new_api(
        client, m.builder.headers, m.app_id, "pricedPublic", steps=steps, price=PRICE, auth=public
    )
    response = await client.post(
        f"/api/v1/apps/{m.app_id}/versions", json={"bump": "minor"}, headers=m.builder.headers
    )
    data_of(response)
    origin = "https://shop.example.com"
    _, pk = await create_key(
        client, m.consumer.headers, type="pk", appId=m.app_id, allowedOrigins=[origin]
    )
    await top_up(client, m.admin, m.consumer.workspace_id, PRICE - 1)
    body = {"appId": m.app_id, "api": "pricedPublic", "version": "latest", "args": {}}
    browser = await client.post(
        "/api/v1/invocations", json=body, headers={"X-Api-Key": pk, "Origin": origin}
    )
    data = assert_error(browser, 402, "insufficient_balance")
    assert "walletId" not in data
    assert data["required"] == data["price"] == PRICE
    server = await client.post("/api/v1/invocations", json=body, headers={"X-Api-Key": m.secret})
    data = assert_error(server, 402, "insufficient_balance")
    wallets = await _wallet_ids(client, m.consumer)
    assert data["walletId"] == wallets["balance"]
