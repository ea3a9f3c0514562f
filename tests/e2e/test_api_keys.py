"""`/api/v1/api-keys`: keys of a subscription (`app-`, `pk-`) or of a workspace (`ws-`).

The secret is shown once and stored only as a hash with a visible prefix; at most 10 keys of a
resource are active; editors create, admins revoke and change; `lastUsedTime` is kept without a
database write per call. Bad input, other tenants' ids and lower roles change nothing.
"""

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, update

from apiforge.keys.models import ApiKey
from apiforge.tools.ids import new_id
from tests.e2e._apps import new_app
from tests.e2e._keys import app_key, call, counting, create_key, keys_of, notes_app, subscribe
from tests.e2e._workspaces import INJECTION, SCRIPT, assert_error, data_of, team
from tests.factories import User, register

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
ORIGIN = "https://notes.example.com"
READ_FIELDS = {
    "id",
    "version",
    "type",
    "name",
    "prefix",
    "status",
    "appId",
    "subscriptionId",
    "role",
    "expiresTime",
    "allowedIps",
    "allowedOrigins",
    "lastUsedTime",
    "createdBy",
    "createdTime",
    "revokedTime",
}


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _subscribed(client: AsyncClient) -> tuple[User, str]:
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    await subscribe(client, owner.headers, app_id)
    return owner, app_id


async def test_the_secret_is_shown_once_and_lists_never_show_it(
    app: FastAPI, client: AsyncClient
) -> None:
    owner, app_id = await _subscribed(client)
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=30)
    body = {
        "type": "pk",
        "name": "Web",
        "appId": app_id,
        "expiresTime": _iso(expires),
        "allowedIps": ["203.0.113.0/24"],
        "allowedOrigins": [ORIGIN],
    }
    created = data_of(await client.post("/api/v1/api-keys", json=body, headers=owner.headers))
    assert set(created) == {"id", "key", "prefix"}
    secret = created["key"]
    assert secret.startswith("pk-")
    assert len(secret) == 43
    assert created["prefix"] == secret[:11]

    listing = await client.get("/api/v1/api-keys", headers=owner.headers)
    one = await client.get(f"/api/v1/api-keys/{created['id']}", headers=owner.headers)
    digest = hashlib.sha256(secret.encode()).hexdigest()
    for response in (listing, one):
        assert secret not in response.text
        assert secret[11:] not in response.text
        assert digest not in response.text
    [listed] = data_of(listing)["list"]
    assert listed == data_of(one)
    assert set(listed) == READ_FIELDS
    subscription_id = listed["subscriptionId"]
    assert listed == {
        "id": created["id"],
        "type": "pk",
        "name": "Web",
        "prefix": secret[:11],
        "status": "active",
        "appId": app_id,
        "subscriptionId": subscription_id,
        "role": None,
        "expiresTime": _iso(expires),
        "allowedIps": ["203.0.113.0/24"],
        "allowedOrigins": [ORIGIN],
        "lastUsedTime": None,
        "createdBy": owner.account_id,
        "version": 1,
        "createdTime": listed["createdTime"],
        "revokedTime": None,
    }
    assert ISO.match(listed["createdTime"])
    # Stored: the hash and a sealed copy, never the secret itself.
    async with app.state.engine.connect() as conn:
        row = (await conn.execute(select(ApiKey).where(ApiKey.id == created["id"]))).one()
    assert row.secret_hash == digest
    assert secret not in row.sealed_secret
    assert secret not in str(tuple(row))


async def test_the_eleventh_active_key_is_refused(app: FastAPI, client: AsyncClient) -> None:
    owner, app_id = await _subscribed(client)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    first, _ = await create_key(client, owner.headers, type="app", appId=app_id)
    expiring, _ = await create_key(
        client, owner.headers, type="app", appId=app_id, expiresTime=tomorrow
    )
    for _ in range(4):
        await create_key(client, owner.headers, type="app", appId=app_id)
    for _ in range(4):
        await create_key(client, owner.headers, type="pk", appId=app_id, allowedOrigins=[ORIGIN])
    before = await keys_of(client, owner.headers)
    assert len(before) == 10

    body = {"type": "app", "name": "eleventh", "appId": app_id}
    refused = await client.post("/api/v1/api-keys", json=body, headers=owner.headers)
    assert_error(refused, 400, "too_many_api_keys")
    assert refused.json()["message"] == (
        "At most 10 active keys per app subscription; revoke one first"
    )
    pk = {**body, "type": "pk", "allowedOrigins": [ORIGIN]}
    assert_error(
        await client.post("/api/v1/api-keys", json=pk, headers=owner.headers),
        400,
        "too_many_api_keys",
    )
    assert await keys_of(client, owner.headers) == before

    # Other resources have their own ten: workspace keys, another app's subscription.
    await create_key(client, owner.headers, type="ws", role="viewer")
    other = await new_app(client, owner.headers, "Other")
    await subscribe(client, owner.headers, other)
    await create_key(client, owner.headers, type="app", appId=other)

    # A revoked key no longer counts ...
    data_of(await client.delete(f"/api/v1/api-keys/{first}", headers=owner.headers))
    await create_key(client, owner.headers, type="app", appId=app_id)
    assert_error(
        await client.post("/api/v1/api-keys", json=body, headers=owner.headers),
        400,
        "too_many_api_keys",
    )
    # ... nor an expired one (a day passes for it: its expiry moves into the past).
    async with app.state.engine.begin() as conn:
        await conn.execute(
            update(ApiKey)
            .where(ApiKey.id == expiring)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert (await keys_of(client, owner.headers))[expiring]["status"] == "expired"
    await create_key(client, owner.headers, type="app", appId=app_id)
    assert_error(
        await client.post("/api/v1/api-keys", json=body, headers=owner.headers),
        400,
        "too_many_api_keys",
    )
    # ... until it is made active again: that needs room like a new key.
    revive = {"expiresTime": None}
    path = f"/api/v1/api-keys/{expiring}"
    assert_error(
        await client.patch(path, json=revive, headers=owner.headers), 400, "too_many_api_keys"
    )
    assert (await keys_of(client, owner.headers))[expiring]["status"] == "expired"
    active = [
        k for k, v in (await keys_of(client, owner.headers)).items() if v["status"] == "active"
    ]
    data_of(await client.delete(f"/api/v1/api-keys/{active[0]}", headers=owner.headers))
    assert (
        data_of(await client.patch(path, json=revive, headers=owner.headers))["status"] == "active"
    )


async def test_ten_workspace_keys_at_most(client: AsyncClient) -> None:
    owner = await register(client)
    for _ in range(10):
        await create_key(client, owner.headers, type="ws", role="editor")
    body = {"type": "ws", "name": "eleventh", "role": "viewer"}
    refused = await client.post("/api/v1/api-keys", json=body, headers=owner.headers)
    assert_error(refused, 400, "too_many_api_keys")
    assert "per workspace" in refused.json()["message"]
    assert len(await keys_of(client, owner.headers)) == 10


async def test_editors_create_admins_revoke(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "viewer", "editor", "admin")
    headers = {**owner.headers, "X-Workspace-Id": workspace_id}
    app_id = await new_app(client, headers)
    await subscribe(client, headers, app_id)

    def as_(role: str) -> dict[str, str]:
        return {**members[role].headers, "X-Workspace-Id": workspace_id}

    app_body = {"type": "app", "name": "k", "appId": app_id}
    for response in (
        await client.post("/api/v1/api-keys", json=app_body, headers=as_("viewer")),
        await client.get("/api/v1/api-keys", headers=as_("viewer")),
    ):
        assert assert_error(response, 403, "insufficient_role")["requiredRole"] == "editor"

    key_id, secret = await create_key(client, as_("editor"), **app_body)
    ws_id, _ = await create_key(client, as_("editor"), type="ws", name="ci", role="editor")
    # A key never outranks its creator.
    too_high = {"type": "ws", "name": "x", "role": "admin"}
    refused = await client.post("/api/v1/api-keys", json=too_high, headers=as_("editor"))
    assert assert_error(refused, 403, "insufficient_role")["requiredRole"] == "admin"
    before = await keys_of(client, as_("admin"))
    assert set(before) == {key_id, ws_id}

    path = f"/api/v1/api-keys/{key_id}"
    for response in (
        await client.delete(path, headers=as_("editor")),
        await client.patch(path, json={"name": "renamed"}, headers=as_("editor")),
    ):
        assert assert_error(response, 403, "insufficient_role")["requiredRole"] == "admin"
    assert await keys_of(client, as_("admin")) == before
    assert (await call(client, secret, app_id, "none")).status_code != 401

    assert data_of(await client.delete(path, headers=as_("admin"))) == {"id": key_id}
    revoked = data_of(await client.get(path, headers=as_("editor")))
    assert revoked["status"] == "revoked"
    assert ISO.match(revoked["revokedTime"])
    # Revoking again changes nothing.
    assert data_of(await client.delete(path, headers=as_("admin"))) == {"id": key_id}
    assert data_of(await client.get(path, headers=as_("editor"))) == revoked
    assert_error(await call(client, secret, app_id, "none"), 401, "api_key_revoked")
    assert_error(
        await client.patch(path, json={"name": "again"}, headers=as_("admin")),
        409,
        "api_key_revoked",
    )


async def test_bad_input_is_refused_and_changes_nothing(client: AsyncClient) -> None:
    owner, app_id = await _subscribed(client)
    other = await register(client)
    foreign = await new_app(client, other.headers, "Foreign")
    await subscribe(client, other.headers, foreign)
    unsubscribed = await new_app(client, owner.headers, "Not enabled")
    key_id, _ = await create_key(client, owner.headers, type="app", appId=app_id)
    before = await keys_of(client, owner.headers)
    h = {**owner.headers, "Content-Type": "application/json"}
    post = "/api/v1/api-keys"

    def field_of(response: Any) -> list[str]:
        return [e["field"] for e in response.json()["data"]["errors"]]

    assert_error(
        await client.post(post, content=b'{"type": "app"', headers=h), 400, "malformed_json"
    )
    assert_error(await client.post(post, json={}, headers=h), 400, "missing_parameters")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"type": "sk", "name": "x"}, "invalid_input", "type"),
        ({"type": "app", "name": "", "appId": app_id}, "invalid_input", "name"),
        ({"type": "app", "name": "x" * 101, "appId": app_id}, "invalid_input", "name"),
        ({"type": "app", "name": 5, "appId": app_id}, "invalid_input", "name"),
        (
            {"type": "app", "name": "x", "appId": app_id, "secret": "mine"},
            "invalid_input",
            "secret",
        ),
        ({"type": "app", "name": "x"}, "missing_parameters", "appId"),
        ({"type": "app", "name": "x", "appId": 7}, "invalid_input", "appId"),
        ({"type": "pk", "name": "x", "appId": app_id}, "invalid_input", "allowedOrigins"),
        (
            {"type": "app", "name": "x", "appId": app_id, "allowedOrigins": [ORIGIN]},
            "invalid_input",
            "allowedOrigins",
        ),
        ({"type": "app", "name": "x", "appId": app_id, "role": "admin"}, "invalid_input", "role"),
        ({"type": "ws", "name": "x"}, "missing_parameters", "role"),
        ({"type": "ws", "name": "x", "role": "owner"}, "invalid_input", "role"),
        ({"type": "ws", "name": "x", "role": "viewer", "appId": app_id}, "invalid_input", "appId"),
        (
            {"type": "ws", "name": "x", "role": "viewer", "allowedOrigins": [ORIGIN]},
            "invalid_input",
            "allowedOrigins",
        ),
        (
            {"type": "app", "name": "x", "appId": app_id, "allowedIps": ["10.0.0.0/33"]},
            "invalid_input",
            "allowedIps.0",
        ),
        (
            {"type": "app", "name": "x", "appId": app_id, "allowedIps": [INJECTION]},
            "invalid_input",
            "allowedIps.0",
        ),
        (
            {"type": "app", "name": "x", "appId": app_id, "allowedIps": ["10.0.0.1"] * 21},
            "invalid_input",
            "allowedIps",
        ),
        (
            {"type": "pk", "name": "x", "appId": app_id, "allowedOrigins": [SCRIPT]},
            "invalid_input",
            "allowedOrigins.0",
        ),
        (
            {"type": "app", "name": "x", "appId": app_id, "expiresTime": "2001-01-01T00:00:00Z"},
            "invalid_input",
            "expiresTime",
        ),
        (
            {"type": "app", "name": "x", "appId": app_id, "expiresTime": "tomorrow"},
            "invalid_input",
            "expiresTime",
        ),
        (
            {"type": "app", "name": "x", "appId": app_id, "expiresTime": [1]},
            "invalid_input",
            "expiresTime",
        ),
        *(  # past year 9999 or before year 1 once in UTC (they were 500s)
            (
                {"type": "app", "name": "x", "appId": app_id, "expiresTime": edge},
                "invalid_input",
                "expiresTime",
            )
            for edge in ("9999-12-31T23:59:59-05:00", "0001-01-01T00:30:00+01:00")
        ),
    ]
    for body, reason, field in cases:
        response = await client.post(post, json=body, headers=h)
        assert_error(response, 400, reason)
        assert field in field_of(response), (body, response.text)
    for app in (foreign, unsubscribed, new_id(), INJECTION):
        body = {"type": "app", "name": "x", "appId": app}
        assert_error(await client.post(post, json=body, headers=h), 404, "subscription_not_found")
    for query in (
        "type=sk",
        "status=gone",
        "sort=secretHash",
        "pageSize=1000",
        "appId=" + "x" * 65,
    ):
        assert (await client.get(f"{post}?{query}", headers=h)).status_code == 400, query
    patch = f"{post}/{key_id}"
    for body in (
        {"expiresTime": "2001-01-01T00:00:00Z"},
        {"expiresTime": "9999-12-31T23:59:59-05:00"},
        {"allowedIps": ["nope"]},
        {"allowedOrigins": [ORIGIN]},  # an app key has no origins
        {"name": ""},
        {"role": "admin"},
        {"type": "ws"},
    ):
        assert (await client.patch(patch, json=body, headers=h)).status_code == 400, body
    assert await keys_of(client, owner.headers) == before


async def test_names_are_plain_data(client: AsyncClient) -> None:
    owner, app_id = await _subscribed(client)
    first, _ = await create_key(client, owner.headers, type="app", appId=app_id, name=INJECTION)
    second, _ = await create_key(client, owner.headers, type="app", appId=app_id, name=SCRIPT)
    listed = await keys_of(client, owner.headers)
    assert (listed[first]["name"], listed[second]["name"]) == (INJECTION, SCRIPT)


async def test_another_workspaces_keys_are_not_found(client: AsyncClient) -> None:
    a = await register(client)
    b = await register(client)
    app_id = await notes_app(client, a)
    key_id, secret = await app_key(client, a, app_id)
    before = await keys_of(client, a.headers)
    path = f"/api/v1/api-keys/{key_id}"
    for response in (
        await client.get(path, headers=b.headers),
        await client.patch(path, json={"name": "mine"}, headers=b.headers),
        await client.delete(path, headers=b.headers),
    ):
        assert_error(response, 404, "api_key_not_found")
    assert (
        data_of(await client.get(f"/api/v1/api-keys?appId={app_id}", headers=b.headers))["list"]
        == []
    )
    assert await keys_of(client, a.headers) == before
    assert data_of(await call(client, secret, app_id, "echo", {"text": "still"})) == {
        "echo": "still"
    }


async def test_admins_change_name_expiry_and_allow_lists(client: AsyncClient) -> None:
    owner, app_id = await _subscribed(client)
    key_id, _ = await create_key(
        client,
        owner.headers,
        type="pk",
        appId=app_id,
        allowedOrigins=[ORIGIN],
        expiresTime=(datetime.now(UTC) + timedelta(days=1)).isoformat(),
    )
    path = f"/api/v1/api-keys/{key_id}"
    changed = data_of(
        await client.patch(
            path,
            json={
                "name": "Renamed",
                "expiresTime": None,
                "allowedIps": ["198.51.100.7"],
                "allowedOrigins": ["http://localhost:3000", "http://localhost:3000"],
            },
            headers=owner.headers,
        )
    )
    assert (changed["name"], changed["expiresTime"], changed["allowedIps"]) == (
        "Renamed",
        None,
        ["198.51.100.7/32"],
    )
    assert changed["allowedOrigins"] == ["http://localhost:3000"]
    assert data_of(await client.get(path, headers=owner.headers)) == changed
    # Left out: unchanged. A publishable key keeps at least one origin.
    assert data_of(await client.patch(path, json={}, headers=owner.headers)) == changed
    assert_error(
        await client.patch(path, json={"allowedOrigins": []}, headers=owner.headers),
        400,
        "invalid_input",
    )


async def test_list_filters(client: AsyncClient) -> None:
    owner, app_id = await _subscribed(client)
    app_k, _ = await create_key(client, owner.headers, type="app", appId=app_id, name="b")
    pk_k, _ = await create_key(
        client, owner.headers, type="pk", appId=app_id, allowedOrigins=[ORIGIN], name="a"
    )
    ws_k, _ = await create_key(client, owner.headers, type="ws", role="viewer", name="c")
    data_of(await client.delete(f"/api/v1/api-keys/{ws_k}", headers=owner.headers))

    async def ids(query: str) -> list[str]:
        page = data_of(await client.get(f"/api/v1/api-keys?{query}", headers=owner.headers))
        return [k["id"] for k in page["list"]]

    assert await ids("type=pk") == [pk_k]
    assert set(await ids(f"appId={app_id}")) == {app_k, pk_k}
    assert await ids("status=revoked") == [ws_k]
    assert set(await ids("status=active")) == {app_k, pk_k}
    assert await ids("status=expired") == []
    assert await ids("sort=name&order=asc") == [pk_k, app_k, ws_k]


async def test_last_used_time_without_a_write_per_call(app: FastAPI, client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    key_id, secret = await app_key(client, owner, app_id)
    assert (await keys_of(client, owner.headers))[key_id]["lastUsedTime"] is None

    with counting(app, "UPDATE api_keys") as writes:
        for n in range(5):
            data_of(await call(client, secret, app_id, "echo", {"text": str(n)}))
    assert writes == []
    used = (await keys_of(client, owner.headers))[key_id]["lastUsedTime"]
    assert ISO.match(used)
    assert abs(datetime.fromisoformat(used) - datetime.now(UTC)) < timedelta(seconds=5)

    # Written in one batch by the tracker (on its timer or at shutdown).
    with counting(app, "UPDATE api_keys") as writes:
        assert await app.state.keys.last_used.flush() == 1
    assert len(writes) == 1
    async with app.state.engine.connect() as conn:
        stored = await conn.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
    assert stored is not None
    assert stored.strftime("%Y-%m-%dT%H:%M:%SZ") == used


async def test_workspace_keys_list_keys_but_never_mint_or_revoke(client: AsyncClient) -> None:
    owner, app_id = await _subscribed(client)
    ws_id, ws_secret = await create_key(client, owner.headers, type="ws", role="admin")
    app_id_key, _ = await create_key(client, owner.headers, type="app", appId=app_id)
    before = await keys_of(client, owner.headers)
    key_headers = {"X-Api-Key": ws_secret}
    assert set(await keys_of(client, key_headers)) == {ws_id, app_id_key}
    for response in (
        await client.post(
            "/api/v1/api-keys",
            json={"type": "ws", "name": "x", "role": "admin"},
            headers=key_headers,
        ),
        await client.patch(f"/api/v1/api-keys/{ws_id}", json={"name": "x"}, headers=key_headers),
        await client.delete(f"/api/v1/api-keys/{app_id_key}", headers=key_headers),
    ):
        assert_error(response, 403, "workspace_key_not_allowed")
    after = await keys_of(client, owner.headers)
    assert ISO.match(after[ws_id].pop("lastUsedTime"))  # the key was used, nothing else changed
    before[ws_id].pop("lastUsedTime")
    assert after == before
