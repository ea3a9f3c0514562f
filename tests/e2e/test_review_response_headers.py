"""Response headers as a security surface, on both edges: no answer may be stored by a shared
cache (`Cache-Control: no-store`, a file download keeps its own `private`), no JSON answer echoing
input may be sniffed as HTML (`X-Content-Type-Options: nosniff`), every envelope is exactly
`application/json` — successes and errors of every layer (router 404/405, body limit 413, the
gateway's own refusals) — and a publishable key's browser still reads its error answers."""

from httpx import AsyncClient, Response

from tests.e2e._keys import app_key, call, create_key, notes_app
from tests.e2e._workspaces import data_of
from tests.factories import PASSWORD, register

ORIGIN = "https://notes.example.com"
TOO_LARGE = b"x" * 3_000_000  # over the default body limit


def assert_not_storable(response: Response, *, json: bool = True) -> None:
    """One `no-store` and one `nosniff` line, and the envelope's exact media type."""
    assert response.headers.get_list("cache-control") == ["no-store"], response.headers
    assert response.headers.get_list("x-content-type-options") == ["nosniff"], response.headers
    if json:
        assert response.headers["content-type"] == "application/json"


async def test_management_answers_with_secrets_or_tenant_data_are_not_storable(
    client: AsyncClient,
) -> None:
    user = await register(client)
    app_id = await notes_app(client, user)
    await app_key(client, user, app_id)  # enables the app for the key below
    login = await client.post(
        "/api/v1/auth/login", json={"email": user.email, "password": PASSWORD}
    )
    refresh = await client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
    new_key = await client.post(
        "/api/v1/api-keys", json={"type": "app", "appId": app_id, "name": "n"}, headers=user.headers
    )
    profile = await client.get("/api/v1/user/profile", headers=user.headers)
    for response in (login, refresh, new_key, profile):
        data_of(response)
        assert_not_storable(response)
    assert profile.headers["etag"]  # optimistic locking keeps its ETag
    for response in (
        await client.get("/api/v1/api-keys", headers=user.headers),
        await client.get(f"/api/v1/apps/{app_id}", headers=user.headers),
    ):
        data_of(response)
        assert_not_storable(response)


async def test_management_errors_of_every_layer_are_not_storable(client: AsyncClient) -> None:
    user = await register(client)
    unmatched = await client.get("/api/v1/no-such-route?q=<script>", headers=user.headers)
    wrong_method = await client.delete("/api/v1/user/profile", headers=user.headers)
    too_large = await client.post("/api/v1/apps", content=TOO_LARGE, headers=user.headers)
    signed_out = await client.get("/api/v1/user/profile")
    head = await client.head("/api/v1/user/profile", headers=user.headers)
    statuses = [r.status_code for r in (unmatched, wrong_method, too_large, signed_out, head)]
    assert statuses == [404, 405, 413, 401, 200]
    for response in (unmatched, wrong_method, too_large, signed_out, head):
        assert_not_storable(response)


async def test_gateway_answers_and_refusals_are_not_storable(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, secret = await app_key(client, owner, app_id)
    echoed = await call(client, secret, app_id, "echo", {"text": "<html><script>x</script>"})
    assert data_of(echoed) == {"echo": "<html><script>x</script>"}
    refused = await call(client, secret, app_id, "echo", {})
    unknown_key = await call(client, "app-nope", app_id, "echo", {"text": "x"})
    wrong_method = await client.get("/api/v1/invocations")
    too_large = await client.post(
        "/api/v1/invocations", content=TOO_LARGE, headers={"X-Api-Key": secret}
    )
    statuses = [r.status_code for r in (refused, unknown_key, wrong_method, too_large)]
    assert statuses == [400, 401, 405, 413]
    for response in (echoed, refused, unknown_key, wrong_method, too_large):
        assert_not_storable(response)


async def test_publishable_key_errors_stay_readable_and_not_storable(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    await app_key(client, owner, app_id)  # enables the app for the key below
    _, pk = await create_key(
        client, owner.headers, type="pk", appId=app_id, allowedOrigins=[ORIGIN]
    )
    no_token = await call(client, pk, app_id, "whoAmI", headers={"Origin": ORIGIN})
    assert no_token.status_code == 401
    assert no_token.headers["access-control-allow-origin"] == ORIGIN
    assert no_token.headers["vary"] == "Origin"
    assert "access-control-allow-credentials" not in no_token.headers
    assert_not_storable(no_token)
    elsewhere = await call(client, pk, app_id, "whoAmI", headers={"Origin": "https://evil.test"})
    assert elsewhere.status_code == 403
    assert "access-control-allow-origin" not in elsewhere.headers
    assert_not_storable(elsewhere)


async def test_a_download_keeps_its_own_cache_control_once(client: AsyncClient) -> None:
    user = await register(client)
    uploaded = await client.post(
        "/api/v1/files",
        files={"file": ("a.txt", b"<html>private</html>", "text/plain")},
        headers=user.headers,
    )
    file_id = data_of(uploaded)["id"]
    download = await client.get(f"/api/v1/files/{file_id}", headers=user.headers)
    assert download.status_code == 200, download.text
    assert download.headers.get_list("cache-control") == ["private"]
    assert download.headers.get_list("x-content-type-options") == ["nosniff"]
