"""Review fixes for key management: NUL characters in names, origins and the `appId` filter are
a 400 or no match on every backend (PostgreSQL cannot store or compare them: they were 500s)."""

from typing import Any

import pytest
from httpx import AsyncClient

from tests.e2e._apps import new_app
from tests.e2e._keys import app_key, call, create_key, keys_of, notes_app, subscribe
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

ORIGIN = "https://notes.example.com"


async def _subscribed(client: AsyncClient) -> tuple[User, str]:
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    await subscribe(client, owner.headers, app_id)
    return owner, app_id


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"type": "app", "name": "a\x00b"}, "name"),
        (
            {"type": "pk", "name": "web", "allowedOrigins": ["https://a\x00b.example"]},
            "allowedOrigins.0",
        ),
        (
            {"type": "pk", "name": "web", "allowedOrigins": ["https://a b.example"]},
            "allowedOrigins.0",
        ),
    ],
)
async def test_a_nul_in_a_new_key_is_400_and_creates_nothing(
    client: AsyncClient, extra: dict[str, Any], field: str
) -> None:
    owner, app_id = await _subscribed(client)
    response = await client.post(
        "/api/v1/api-keys", json={**extra, "appId": app_id}, headers=owner.headers
    )
    data = assert_error(response, 400, "invalid_input")
    assert [e["field"] for e in data["errors"]] == [field]
    assert await keys_of(client, owner.headers) == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [({"name": "a\x00b"}, "name"), ({"allowedOrigins": [ORIGIN + "\x00"]}, "allowedOrigins.0")],
)
async def test_a_nul_in_a_key_change_is_400_and_changes_nothing(
    client: AsyncClient, body: dict[str, Any], field: str
) -> None:
    owner, app_id = await _subscribed(client)
    key_id, _ = await create_key(
        client, owner.headers, type="pk", appId=app_id, name="web", allowedOrigins=[ORIGIN]
    )
    path = f"/api/v1/api-keys/{key_id}"
    data = assert_error(
        await client.patch(path, json=body, headers=owner.headers), 400, "invalid_input"
    )
    assert [e["field"] for e in data["errors"]] == [field]
    key = data_of(await client.get(path, headers=owner.headers))
    assert (key["name"], key["allowedOrigins"], key["version"]) == ("web", [ORIGIN], 1)


@pytest.mark.parametrize("field", ["name", "allowedIps", "allowedOrigins"])
async def test_a_null_name_or_allow_list_in_a_key_change_is_400_and_changes_nothing(
    client: AsyncClient, field: str
) -> None:
    """`{"name": null}` answered 200 and changed nothing, and so did a null allow-list, which
    reads as "allow everyone" (`[]` does that); as other nulls that can't be stored, a 400
    naming the field. `expiresTime: null` still removes the expiry."""
    owner, app_id = await _subscribed(client)
    key_id, _ = await create_key(
        client,
        owner.headers,
        type="pk",
        appId=app_id,
        name="web",
        allowedOrigins=[ORIGIN],
        allowedIps=["10.0.0.0/8"],
        expiresTime="2999-01-01T00:00:00Z",
    )
    path = f"/api/v1/api-keys/{key_id}"
    body = {field: None, "expiresTime": None}
    data = assert_error(
        await client.patch(path, json=body, headers=owner.headers), 400, "invalid_input"
    )
    assert [e["field"] for e in data["errors"]] == [field]
    key = data_of(await client.get(path, headers=owner.headers))
    assert key["version"] == 1
    assert (key["name"], key["allowedOrigins"], key["allowedIps"]) == (
        "web",
        [ORIGIN],
        ["10.0.0.0/8"],
    )
    assert key["expiresTime"] is not None
    cleared = await client.patch(path, json={"expiresTime": None}, headers=owner.headers)
    assert data_of(cleared)["expiresTime"] is None


async def test_an_app_id_filter_that_is_no_id_matches_no_key(client: AsyncClient) -> None:
    owner, app_id = await _subscribed(client)
    await create_key(client, owner.headers, type="app", appId=app_id)
    for value in ("a\x00b", "not-an-id", app_id + "x"):
        response = await client.get(
            "/api/v1/api-keys", params={"appId": value}, headers=owner.headers
        )
        page = data_of(response)
        assert (page["totalCount"], page["list"]) == (0, [])
    page = data_of(
        await client.get("/api/v1/api-keys", params={"appId": app_id}, headers=owner.headers)
    )
    assert page["totalCount"] == 1


async def test_a_publishable_key_for_an_internationalised_origin_works_from_that_origin(
    client: AsyncClient,
) -> None:
    """Browsers send `Origin: https://xn--bcher-kva.example` for `https://bücher.example`; the
    key stored the Unicode form, so every call from that page was 403 `origin_not_allowed`."""
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, server_key = await app_key(client, owner, app_id)
    key_id, pk = await create_key(
        client, owner.headers, type="pk", appId=app_id, allowedOrigins=["https://Bücher.example"]
    )
    browser = "https://xn--bcher-kva.example"
    key = data_of(await client.get(f"/api/v1/api-keys/{key_id}", headers=owner.headers))
    assert key["allowedOrigins"] == [browser]
    signed_in = await call(client, server_key, app_id, "signIn", {"user": "reader-1"})
    token = data_of(signed_in)["session"]["token"]
    headers = {"Origin": browser, "Authorization": f"Bearer {token}"}
    response = await call(client, pk, app_id, "whoAmI", headers=headers)
    assert data_of(response) == {"me": "reader-1"}
    assert response.headers["access-control-allow-origin"] == browser
