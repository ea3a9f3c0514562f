"""NUL characters in the management API's remaining text inputs (billing notes, dataset
descriptions and filters, money-chart and ledger filters, the workflow's app id): a 400
`invalid_input` naming the field on every backend, where PostgreSQL answered 500; nothing is
written. The structural check over every route is tests/unit/http/test_review_nul_inputs.py."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from tests.e2e._apps import new_app
from tests.e2e._billing import PRICE, balances, invoke, market, top_up
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import make_admin, register

NUL = "a\x00b"


def _refused(response: Response, field: str) -> None:
    data = assert_error(response, 400, "invalid_input")
    assert [e["field"] for e in data["errors"]] == [field], data


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/datasets?appId=a%00b", "appId"),
        ("/api/v1/datasets?q=a%00b", "q"),
        ("/api/v1/ledger-entries?appId=a%00b", "appId"),
        ("/api/v1/usage/spend?appId=a%00b", "appId"),
        ("/api/v1/usage/earnings?appId=a%00b", "appId"),
        ("/api/v1/usage/spend?appId=a%00b&chart=pie", "appId"),
    ],
)
async def test_a_nul_in_a_list_or_chart_filter_is_400(
    client: AsyncClient, path: str, field: str
) -> None:
    user = await register(client)
    _refused(await client.get(path, headers=user.headers), field)


async def test_a_nul_in_a_dataset_description_is_400_and_changes_nothing(
    client: AsyncClient,
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    body: dict[str, Any] = {"appId": app_id, "name": "items", "description": NUL}
    _refused(await client.post("/api/v1/datasets", json=body, headers=user.headers), "description")
    listed = data_of(await client.get("/api/v1/datasets", headers=user.headers))
    assert listed["list"] == []

    body["description"] = "Things"
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))[
        "id"
    ]
    update = {"name": "items", "description": NUL, "fields": []}
    response = await client.put(
        f"/api/v1/datasets/{dataset_id}", json=update, headers={**user.headers, "If-Match": "*"}
    )
    _refused(response, "description")
    dataset = data_of(await client.get(f"/api/v1/datasets/{dataset_id}", headers=user.headers))
    assert (dataset["description"], dataset["version"]) == ("Things", 1)


async def test_a_nul_in_a_record_filter_value_or_field_list_is_a_400(client: AsyncClient) -> None:
    """Left to the datasets code (allow-listed): no 500 either way."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    body = {"appId": app_id, "name": "items", "fields": [{"name": "title", "type": "string"}]}
    dataset_id = data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))[
        "id"
    ]
    path = f"/api/v1/datasets/{dataset_id}/records"
    for params in (
        {"filter": '{"title": {"_eq": "a\\u0000b"}}'},
        {"filter": '{"ti\\u0000tle": {"_eq": "x"}}'},
        {"fields": "title,a\x00b"},
    ):
        response = await client.get(path, params=params, headers=user.headers)
        assert response.status_code == 400, response.text


async def test_a_nul_in_a_credit_note_is_400_and_credits_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    before = await balances(client, user)
    response = await client.post(
        f"/api/v1/admin/wallets/{user.workspace_id}/credits",
        json={"amount": 5, "note": NUL},
        headers=admin.headers,
    )
    _refused(response, "note")
    assert await balances(client, user) == before


async def test_a_nul_in_a_withdrawal_note_or_decision_is_400_and_moves_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    m = await market(app, client)
    await top_up(client, m.admin, m.consumer.workspace_id, 2 * PRICE)
    assert [await invoke(client, m) for _ in range(2)] == [200, 200]
    earned = await balances(client, m.builder)

    body = {"amount": 1, "note": NUL}
    _refused(await client.post("/api/v1/withdrawals", json=body, headers=m.builder.headers), "note")
    assert await balances(client, m.builder) == earned
    assert data_of(await client.get("/api/v1/withdrawals", headers=m.builder.headers))["list"] == []

    response = await client.post(
        "/api/v1/withdrawals", json={"amount": 1}, headers=m.builder.headers
    )
    withdrawal_id = data_of(response)["id"]
    decision = {"status": "approved", "note": NUL}
    response = await client.patch(
        f"/api/v1/admin/withdrawals/{withdrawal_id}", json=decision, headers=m.admin.headers
    )
    _refused(response, "note")
    [withdrawal] = data_of(await client.get("/api/v1/withdrawals", headers=m.builder.headers))[
        "list"
    ]
    assert (withdrawal["status"], withdrawal["decisionNote"]) == ("requested", "")


async def test_a_nul_in_a_workflows_app_id_is_400(client: AsyncClient) -> None:
    user = await register(client)
    body = {"appId": NUL, "steps": []}
    _refused(await client.post("/api/v1/workflows", json=body, headers=user.headers), "appId")


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        # Ids the services check with `is_id` (allow-listed): the 404 of any unknown id.
        ("/api/v1/subscriptions", {"appId": NUL}, 404),
        ("/api/v1/datasets", {"appId": NUL, "name": "items"}, 404),
        ("/api/v1/redemptions", {"amount": 1, "targetWorkspaceId": NUL}, 404),
    ],
)
async def test_a_nul_in_a_checked_id_is_the_404_of_an_unknown_one(
    client: AsyncClient, path: str, body: dict[str, Any], status: int
) -> None:
    user = await register(client)
    response = await client.post(path, json=body, headers=user.headers)
    assert response.status_code == status, response.text


async def test_a_nul_in_an_invocations_app_id_is_no_500(app: FastAPI, client: AsyncClient) -> None:
    """The gateway's body has no validators (hot path, allow-listed); its lookups refuse NUL."""
    m = await market(app, client)
    body = {"appId": NUL, "api": "priced", "version": "latest", "args": {"k\x00": "v\x00"}}
    response = await client.post("/api/v1/invocations", json=body, headers={"X-Api-Key": m.secret})
    assert 400 <= response.status_code < 500, response.text
    body = {"appId": m.app_id, "api": "priced", "version": "latest", "args": {"k\x00": "v\x00"}}
    response = await client.post("/api/v1/invocations", json=body, headers={"X-Api-Key": m.secret})
    assert response.status_code < 500, response.text
