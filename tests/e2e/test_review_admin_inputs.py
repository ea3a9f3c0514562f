"""`/api/v1/admin/users` under review: ids and searches PostgreSQL can't take as parameters (NUL)
are a clear 404 or 400 on every backend, never a 500, and change nothing."""

from fastapi import FastAPI
from httpx import AsyncClient

from tests.e2e._workspaces import assert_error, data_of
from tests.factories import make_admin, register


async def test_a_user_id_with_nul_is_404_and_changes_nothing(
    app: FastAPI, client: AsyncClient
) -> None:
    admin = await make_admin(app, client)
    user = await register(client)
    path = "/api/v1/admin/users/a%00b"
    assert_error(await client.get(path, headers=admin.headers), 404, "user_not_found")
    patched = await client.patch(path, json={"status": "disabled"}, headers=admin.headers)
    assert_error(patched, 404, "user_not_found")
    assert_error(await client.delete(path, headers=admin.headers), 404, "user_not_found")
    # A real id with a NUL appended is not that account either.
    suffixed = f"/api/v1/admin/users/{user.account_id}%00"
    assert_error(await client.delete(suffixed, headers=admin.headers), 404, "user_not_found")

    account = data_of(
        await client.get(f"/api/v1/admin/users/{user.account_id}", headers=admin.headers)
    )
    assert account["status"] == "active"


async def test_a_search_with_nul_is_400(app: FastAPI, client: AsyncClient) -> None:
    admin = await make_admin(app, client)
    response = await client.get(
        "/api/v1/admin/users", params={"q": "a\x00b"}, headers=admin.headers
    )
    data = assert_error(response, 400, "invalid_input")
    assert data["errors"][0]["field"] == "q"
