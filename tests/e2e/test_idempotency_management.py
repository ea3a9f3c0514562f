"""Idempotency keys, sequence numbers and anti-duplicate tokens on the management API: creating
apps shows how many times a write really ran (the app list)."""

import asyncio

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import select

from apiforge.core.settings import Settings
from apiforge.idempotency.models import IdempotencyRecord
from tests.e2e._keys import create_key
from tests.e2e._workspaces import assert_error, data_of, new_workspace
from tests.factories import User, register

KEY = "Idempotency-Key"


async def _create(client: AsyncClient, headers: dict[str, str], name: str = "Shop") -> Response:
    return await client.post("/api/v1/apps", json={"name": name}, headers=headers)


async def _app_count(client: AsyncClient, headers: dict[str, str]) -> int:
    count: int = data_of(await client.get("/api/v1/apps", headers=headers))["totalCount"]
    return count


def _replayed(response: Response) -> bool:
    return bool(response.headers.get("Idempotent-Replayed") == "1")


async def test_a_repeated_create_replays_the_first_answer(client: AsyncClient) -> None:
    user = await register(client)
    first = await _create(client, {**user.headers, KEY: "create-shop"})
    again = await _create(client, {**user.headers, KEY: '"create-shop"'})
    assert first.status_code == again.status_code == 200
    assert not _replayed(first)
    assert _replayed(again)
    assert again.content == first.content
    assert again.headers["content-type"] == first.headers["content-type"]
    assert await _app_count(client, user.headers) == 1


async def test_concurrent_creates_with_one_key_create_one_app(client: AsyncClient) -> None:
    user = await register(client)
    responses = await asyncio.gather(
        *(_create(client, {**user.headers, KEY: "burst"}) for _ in range(20))
    )
    assert {r.status_code for r in responses} <= {200, 409}
    successes = [r for r in responses if r.status_code == 200]
    assert len({r.content for r in successes}) == 1
    assert sum(not _replayed(r) for r in successes) == 1
    for refused in (r for r in responses if r.status_code == 409):
        assert_error(refused, 409, "idempotency_key_in_use")
    assert await _app_count(client, user.headers) == 1


async def test_another_payload_or_path_with_the_key_is_422(client: AsyncClient) -> None:
    user = await register(client)
    assert (await _create(client, {**user.headers, KEY: "k"})).status_code == 200
    other = await _create(client, {**user.headers, KEY: "k"}, name="Other")
    assert_error(other, 422, "idempotency_key_mismatch")
    workspace = await client.post(
        "/api/v1/workspaces", json={"name": "Shop"}, headers={**user.headers, KEY: "k"}
    )
    assert_error(workspace, 422, "idempotency_key_mismatch")
    assert await _app_count(client, user.headers) == 1


async def test_refused_writes_are_not_stored(client: AsyncClient) -> None:
    user = await register(client)
    # No credentials: the route refuses before anything is claimed.
    assert_error(await _create(client, {KEY: "k"}), 401, "unauthenticated")
    # Invalid body: refused, the key stays free for the corrected request.
    bad = await client.post("/api/v1/apps", json={"name": ""}, headers={**user.headers, KEY: "k"})
    assert bad.status_code == 400
    unknown = await client.post(
        "/api/v1/apps", json={"name": "x", "isAdmin": True}, headers={**user.headers, KEY: "k"}
    )
    assert_error(unknown, 400, "invalid_input")
    good = await _create(client, {**user.headers, KEY: "k"})
    assert good.status_code == 200
    assert not _replayed(good)
    assert await _app_count(client, user.headers) == 1


async def test_malformed_keys_are_400(client: AsyncClient) -> None:
    user = await register(client)
    for bad in ("k" * 256, "", "a b"):
        data = assert_error(
            await _create(client, {**user.headers, KEY: bad}), 400, "invalid_idempotency_key"
        )
        assert data["errors"][0]["field"] == "Idempotency-Key"
    assert await _app_count(client, user.headers) == 0


async def test_keys_are_scoped_to_caller_and_workspace(client: AsyncClient) -> None:
    alice, bob = await register(client), await register(client)
    first = await _create(client, {**alice.headers, KEY: "same"})
    theirs = await _create(client, {**bob.headers, KEY: "same"})
    assert theirs.status_code == 200
    assert not _replayed(theirs)
    assert theirs.content != first.content
    team = await new_workspace(client, alice)
    in_team = await _create(client, {**alice.headers, "X-Workspace-Id": team, KEY: "same"})
    assert not _replayed(in_team)
    _, ws_key = await create_key(client, alice.headers, type="ws", role="editor")
    by_key = await _create(client, {"X-Api-Key": ws_key, KEY: "same"})
    assert by_key.status_code == 200
    assert not _replayed(by_key)
    assert await _app_count(client, alice.headers) == 2
    assert await _app_count(client, bob.headers) == 1


async def test_a_key_survives_a_token_refresh(client: AsyncClient) -> None:
    user = await register(client)
    first = await _create(client, {**user.headers, KEY: "k"})
    refreshed = data_of(
        await client.post("/api/v1/auth/refresh", json={"refreshToken": user.refresh_token})
    )
    headers = {"Authorization": f"Bearer {refreshed['accessToken']}", KEY: "k"}
    again = await _create(client, headers)
    assert _replayed(again)
    assert again.content == first.content


async def test_sequence_numbers_and_tokens_on_the_management_api(client: AsyncClient) -> None:
    user: User = await register(client)
    first = await _create(client, {**user.headers, "X-Request-Seq": "77"})
    again = await _create(client, {**user.headers, "X-Request-Seq": "77"})
    assert _replayed(again)
    assert again.content == first.content
    token = data_of(await client.get("/api/v1/idempotency-tokens", headers=user.headers))["token"]
    with_token = await _create(client, {**user.headers, "X-Idempotency-Token": token}, "B")
    assert with_token.status_code == 200
    reused = await _create(client, {**user.headers, "X-Idempotency-Token": token}, "B")
    assert_error(reused, 409, "duplicate_request")
    other = await register(client)
    stolen = await _create(client, {**other.headers, "X-Idempotency-Token": token}, "C")
    assert_error(stolen, 409, "duplicate_request")
    assert await _app_count(client, user.headers) == 2
    assert await _app_count(client, other.headers) == 0


async def test_reads_and_the_gateway_path_are_left_alone(client: AsyncClient) -> None:
    user = await register(client)
    listed = await client.get("/api/v1/apps", headers={**user.headers, KEY: "k" * 300})
    assert listed.status_code == 200
    assert "Idempotent-Replayed" not in listed.headers


async def test_the_headers_and_the_token_endpoint_are_documented(client: AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path, method in (
        ("/api/v1/apps", "post"),
        ("/api/v1/apps/{app_id}", "patch"),
        ("/api/v1/invocations", "post"),
    ):
        names = {p["name"] for p in schema["paths"][path][method].get("parameters", [])}
        assert {"Idempotency-Key", "X-Request-Seq", "X-Idempotency-Token"} <= names, path
    assert "Idempotency-Key" not in {
        p["name"] for p in schema["paths"]["/api/v1/apps"]["get"].get("parameters", [])
    }
    # Made before there is a caller to scope a key to: the headers are ignored, so not offered.
    for path in ("/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/refresh"):
        names = {p["name"] for p in schema["paths"][path]["post"].get("parameters", [])}
        assert not names & {"Idempotency-Key", "X-Request-Seq", "X-Idempotency-Token"}, path
    logout = schema["paths"]["/api/v1/auth/logout"]["post"]["parameters"]
    assert "Idempotency-Key" in {p["name"] for p in logout}
    tokens = schema["paths"]["/api/v1/idempotency-tokens"]["get"]
    assert tokens["summary"]
    assert "If-Match" in {
        p["name"] for p in schema["paths"]["/api/v1/apps/{app_id}"]["patch"]["parameters"]
    }


async def test_malformed_bodies_are_refused_and_not_stored(client: AsyncClient) -> None:
    user = await register(client)
    headers = {**user.headers, KEY: "k", "Content-Type": "application/json"}
    for content in (b"{", b"[]", b'{"name": 5}', b'{"name": "' + b"x" * 5000 + b'"}'):
        response = await client.post("/api/v1/apps", content=content, headers=headers)
        assert response.status_code == 400, response.text
    assert (await _create(client, {**user.headers, KEY: "k"})).status_code == 200
    assert await _app_count(client, user.headers) == 1


async def test_a_replay_needs_credentials_the_route_would_accept(client: AsyncClient) -> None:
    """A stored answer (here a new app; it could be a minted key's secret) is never handed to a
    revoked `ws-` key or a signed-out session: the route would refuse them, so does the replay."""
    user = await register(client)
    key_id, secret = await create_key(client, user.headers, type="ws", role="editor")
    assert (await _create(client, {"X-Api-Key": secret, KEY: "by-key"})).status_code == 200
    assert (await client.delete(f"/api/v1/api-keys/{key_id}", headers=user.headers)).is_success
    refused = await _create(client, {"X-Api-Key": secret, KEY: "by-key"})
    assert_error(refused, 401, "api_key_revoked")
    assert not _replayed(refused)
    assert (await _create(client, {**user.headers, KEY: "by-session"})).status_code == 200
    assert (await client.post("/api/v1/auth/logout", headers=user.headers)).is_success
    refused = await _create(client, {**user.headers, KEY: "by-session"})
    assert_error(refused, 401, "session_revoked")
    assert not _replayed(refused)


async def test_the_default_workspace_and_its_id_are_one_scope(client: AsyncClient) -> None:
    """Leaving `X-Workspace-Id` to its default and naming that workspace act in one workspace:
    one key there, one app."""
    user = await register(client)
    first = await _create(client, {**user.headers, KEY: "w"})
    named = await _create(client, {**user.headers, KEY: "w", "X-Workspace-Id": user.workspace_id})
    assert _replayed(named)
    assert named.content == first.content
    assert await _app_count(client, user.headers) == 1


async def test_stored_answers_are_sealed_so_a_new_keys_secret_is_never_kept_in_clear(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    # A keyed POST /api-keys answer holds the key's one-time secret: it is replayed exactly, but
    # what the database (or any file of the server) keeps of it is sealed.
    user = await register(client)
    headers = {**user.headers, KEY: "mint-ws-key"}
    body = {"type": "ws", "name": "ci", "role": "editor"}
    first = await client.post("/api/v1/api-keys", json=body, headers=headers)
    again = await client.post("/api/v1/api-keys", json=body, headers=headers)
    secret = data_of(first)["key"]
    assert _replayed(again)
    assert again.content == first.content
    async with app.state.engine.connect() as conn:
        rows = (await conn.execute(select(IdempotencyRecord))).all()
    stored = [row.body for row in rows if row.body]
    assert stored
    assert all(b.startswith(b"\x00sealed:v1:") for b in stored)
    assert not any(secret.encode() in repr(tuple(row)).encode() for row in rows)
    for path in settings.data_dir.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
