"""Fourth review of accounts: a settings value holding a whole float between 2**63 and 2**64 reads
back as it was stored on PostgreSQL too, so a document read with GET can be PUT back; the tokens
of an account an administrator disabled get the documented 401 `account_disabled`, and so do its
refresh tokens."""

from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient

from tests.e2e._workspaces import assert_error, data_of
from tests.factories import PASSWORD, make_admin, register

DOC = "/api/v1/user/settings"


async def test_a_settings_document_read_back_can_be_put_back(client: AsyncClient) -> None:
    """JSONB writes the float 1e19 as the digits of a whole number, which was read back as an
    integer past 64 bits on PostgreSQL: the document GET answered was then refused by PUT (400
    `invalid_setting_value`, "integers must fit in 64 bits"), and SQLite answered `1e+19`."""
    user = await register(client)
    headers = {**user.headers, "Content-Type": "application/json"}
    stored = b'{"big": 1e19, "near": 12345678901234567890.0, "list": [1.5e19], "small": 7}'
    assert (await client.put(DOC, content=stored, headers=headers)).status_code == 200
    read: dict[str, Any] = (await client.get(DOC, headers=headers)).json()["data"]
    assert read == {"big": 1e19, "near": 12345678901234567890.0, "list": [1.5e19], "small": 7}
    assert all(isinstance(read[key], float) for key in ("big", "near"))
    assert isinstance(read["list"][0], float)
    assert isinstance(read["small"], int)
    put_back = await client.put(DOC, json=read, headers=user.headers)
    assert put_back.status_code == 200, put_back.text
    app = f"{DOC}/apps/notes/big"
    assert (await client.put(app, content=b'{"value": 1e19}', headers=headers)).status_code == 200
    value = (await client.get(app, headers=headers)).json()["data"]["value"]
    assert isinstance(value, float)
    assert value == 1e19


async def test_the_tokens_of_a_disabled_account_say_it_is_disabled(
    app: FastAPI, client: AsyncClient
) -> None:
    """docs/accounts.md: a disabled account's `/user/*` calls are 401 `account_disabled`. Disabling
    also ends the account's sessions, and the ended session was checked first: every token of a
    disabled account got `session_revoked` ("sign in again"), which only led to a 403."""
    admin = await make_admin(app, client)
    user = await register(client)
    disabled = await client.patch(
        f"/api/v1/admin/users/{user.account_id}", json={"status": "disabled"}, headers=admin.headers
    )
    data_of(disabled)
    for path in ("/api/v1/user/profile", "/api/v1/user/sessions", DOC):
        assert_error(await client.get(path, headers=user.headers), 401, "account_disabled")
    signed_out = await client.post("/api/v1/auth/logout", headers=user.headers)
    assert_error(signed_out, 401, "account_disabled")
    refreshed = await client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
    assert_error(refreshed, 401, "account_disabled")
    sign_in = {"email": user.email, "password": PASSWORD}
    assert_error(await client.post("/api/v1/auth/login", json=sign_in), 403, "account_disabled")
    enabled = await client.patch(
        f"/api/v1/admin/users/{user.account_id}", json={"status": "active"}, headers=admin.headers
    )
    data_of(enabled)
    # Enabling brings no session back: the ended one stays ended.
    answer = await client.get("/api/v1/user/profile", headers=user.headers)
    assert_error(answer, 401, "session_revoked")
    refreshed = await client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
    assert_error(refreshed, 401, "session_revoked")
