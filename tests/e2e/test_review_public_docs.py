"""Review of the docs other workspaces read of a public app: no value of a sensitive param (its
`default`) in the OpenAPI document or the HTML page, and no empty `cost` badge where `x-cost`
is left out."""

from typing import Any

from httpx import AsyncClient

from tests.e2e._apps import new_api
from tests.e2e._keys import notes_app, subscribe
from tests.e2e._workspaces import data_of
from tests.factories import User, register

PIN = "s3cr3t-default-pin"


async def _public_app_with_a_sensitive_default(client: AsyncClient) -> tuple[User, User, str]:
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public", publish=False)
    params = [
        {"name": "pin", "type": "string", "sensitive": True, "default": PIN},
        {"name": "label", "type": "string", "default": "plain"},
    ]
    steps = [{"id": "ok", "type": "set", "value": {"expr": "size(args.pin) > 0"}}]
    await new_api(client, owner.headers, app_id, "unlock", params=params, steps=steps, price=5)
    response = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=owner.headers
    )
    data_of(response)
    await subscribe(client, consumer.headers, app_id)
    return owner, consumer, app_id


async def test_docs_never_show_a_sensitive_params_default(client: AsyncClient) -> None:
    owner, consumer, app_id = await _public_app_with_a_sensitive_default(client)
    for reader in (consumer, owner):
        response = await client.get(f"/api/v1/apps/{app_id}/openapi.json", headers=reader.headers)
        assert response.status_code == 200, response.text
        assert PIN not in response.text
        operation = response.json()["paths"]["/api/v1/invocations#unlock"]["post"]
        args: dict[str, Any] = operation["requestBody"]["content"]["application/json"]["schema"][
            "properties"
        ]["args"]
        assert args["properties"]["pin"] == {"type": "string", "writeOnly": True}
        assert args["properties"]["label"]["default"] == "plain"  # other defaults stay
        page = await client.get(f"/api/v1/apps/{app_id}/docs", headers=reader.headers)
        assert page.status_code == 200
        assert PIN not in page.text
        assert "plain" in page.text


async def test_consumers_docs_page_has_no_cost_badge(client: AsyncClient) -> None:
    owner, consumer, app_id = await _public_app_with_a_sensitive_default(client)
    theirs = await client.get(f"/api/v1/apps/{app_id}/docs", headers=consumer.headers)
    mine = await client.get(f"/api/v1/apps/{app_id}/docs", headers=owner.headers)
    assert theirs.status_code == mine.status_code == 200
    assert "price 5 RU" in theirs.text
    assert "<span class=badge>cost " not in theirs.text  # was "cost  RU": an empty amount
    assert "<span class=badge>cost 0 RU</span>" in mine.text
