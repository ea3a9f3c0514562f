"""Second review of key policy: IP allow-list entries in IPv4-mapped form (they never matched),
trusted proxies in that form, zones in allow-list entries (a NUL in one was a 500 on
PostgreSQL), wildcard origins of publishable keys (stored, then matched no page), and the
ten-active-keys limit and `lastUsedTime` under concurrency and restarts, on both backends."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, update

from apiforge.core.settings import Settings
from apiforge.keys.models import ApiKey
from tests.e2e._apps import new_app
from tests.e2e._keys import app_key, call, create_key, keys_of, notes_app, subscribe
from tests.e2e._workspaces import assert_error, data_of
from tests.e2e.test_gateway_keys import node
from tests.factories import User, register

ECHO = {"text": "hi"}


async def _subscribed(client: AsyncClient) -> tuple[User, str]:
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    await subscribe(client, owner.headers, app_id)
    return owner, app_id


# --- IPv4-mapped IPv6 entries --------------------------------------------------------------------


async def test_an_ipv4_mapped_allow_list_entry_admits_that_ipv4_client(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    mapped = ["::ffff:203.0.113.5", "::ffff:198.51.100.0/120"]
    key_id, secret = await app_key(client, owner, app_id, allowedIps=mapped)
    listed = (await keys_of(client, owner.headers))[key_id]["allowedIps"]
    assert listed == ["203.0.113.5/32", "198.51.100.0/24"]
    for peer in ("203.0.113.5", "::ffff:198.51.100.9"):
        async with node(settings, (peer, 4000)) as direct:
            data_of(await call(direct, secret, app_id, "echo", ECHO))
    async with node(settings, ("192.0.2.1", 4000)) as outside:
        assert_error(await call(outside, secret, app_id, "echo", ECHO), 403, "ip_not_allowed")

    # A key stored with the IPv6 form (made before this was normalised) is matched the same way.
    old_id, old_secret = await create_key(client, owner.headers, type="app", appId=app_id)
    async with app.state.engine.begin() as conn:
        stored = {"allowed_ips": ["::ffff:cb00:7105/128"]}  # ::ffff:203.0.113.5
        await conn.execute(update(ApiKey).where(ApiKey.id == old_id).values(**stored))
    async with node(settings, ("203.0.113.5", 4000)) as direct:
        data_of(await call(direct, old_secret, app_id, "echo", ECHO))


async def test_a_trusted_proxy_given_in_ipv4_mapped_form_is_trusted(
    client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, secret = await app_key(client, owner, app_id, allowedIps=["203.0.113.0/24"])
    behind_proxy = settings.model_copy(update={"trusted_proxies": ["::ffff:127.0.0.1"]})
    async with node(behind_proxy) as proxied:
        forwarded = {"X-Forwarded-For": "203.0.113.9"}
        data_of(await call(proxied, secret, app_id, "echo", ECHO, headers=forwarded))
        refused = await call(proxied, secret, app_id, "echo", ECHO)  # the proxy itself
        assert_error(refused, 403, "ip_not_allowed")


# --- zones ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["fe80::1%\x00", "fe80::1%eth0", "fe80::%lo/64"])
async def test_a_zone_in_an_allow_list_entry_is_400_and_stores_nothing(
    client: AsyncClient, entry: str
) -> None:
    owner, app_id = await _subscribed(client)
    body = {"type": "app", "name": "zoned", "appId": app_id, "allowedIps": [entry]}
    refused = await client.post("/api/v1/api-keys", json=body, headers=owner.headers)
    data = assert_error(refused, 400, "invalid_input")
    assert [e["field"] for e in data["errors"]] == ["allowedIps.0"]
    assert await keys_of(client, owner.headers) == {}

    key_id, _ = await create_key(client, owner.headers, type="app", appId=app_id)
    before = (await keys_of(client, owner.headers))[key_id]
    path = f"/api/v1/api-keys/{key_id}"
    changed = await client.patch(path, json={"allowedIps": [entry]}, headers=owner.headers)
    assert_error(changed, 400, "invalid_input")
    assert (await keys_of(client, owner.headers))[key_id] == before


# --- publishable key origins ---------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["https://*.example.com", "https://example.com:*"])
async def test_a_wildcard_origin_is_400_rather_than_a_key_no_page_can_use(
    client: AsyncClient, origin: str
) -> None:
    owner, app_id = await _subscribed(client)
    body = {"type": "pk", "name": "web", "appId": app_id, "allowedOrigins": [origin]}
    refused = await client.post("/api/v1/api-keys", json=body, headers=owner.headers)
    data = assert_error(refused, 400, "invalid_input")
    assert [e["field"] for e in data["errors"]] == ["allowedOrigins.0"]
    assert "wildcard" in data["errors"][0]["message"]
    assert await keys_of(client, owner.headers) == {}


async def test_an_ipv6_origin_is_stored_as_browsers_send_it(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, server_key = await app_key(client, owner, app_id)
    given = ["http://[0:0:0:0:0:0:0:1]:3000", "https://[2001:DB8:0:0::7]"]
    sent = ["http://[::1]:3000", "https://[2001:db8::7]"]  # what a browser puts in `Origin`
    key_id, pk = await create_key(
        client, owner.headers, type="pk", appId=app_id, allowedOrigins=given
    )
    assert (await keys_of(client, owner.headers))[key_id]["allowedOrigins"] == sent
    signed = data_of(await call(client, server_key, app_id, "signIn", {"user": "reader"}))
    bearer = f"Bearer {signed['session']['token']}"
    for origin in sent:
        answer = await call(
            client, pk, app_id, "whoAmI", headers={"Origin": origin, "Authorization": bearer}
        )
        assert data_of(answer) == {"me": "reader"}
        assert answer.headers["access-control-allow-origin"] == origin
    body = {"type": "pk", "name": "zoned", "appId": app_id}
    zoned = {**body, "allowedOrigins": ["http://[fe80::1%25eth0]:3000"]}
    refused = await client.post("/api/v1/api-keys", json=zoned, headers=owner.headers)
    assert_error(refused, 400, "invalid_input")
    assert len(await keys_of(client, owner.headers)) == 2  # the app key and the pk key


# --- the ten active keys under concurrency -------------------------------------------------------


async def test_concurrent_workspace_keys_stop_at_ten(client: AsyncClient) -> None:
    owner = await register(client)
    body = {"type": "ws", "name": "k", "role": "viewer"}
    answers = await asyncio.gather(
        *(client.post("/api/v1/api-keys", json=body, headers=owner.headers) for _ in range(14))
    )
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 10 + [400] * 4
    for answer in answers:
        if answer.status_code == 400:
            assert_error(answer, 400, "too_many_api_keys")
    assert len(await keys_of(client, owner.headers)) == 10


async def test_concurrent_revivals_of_expired_keys_take_only_the_free_room(
    app: FastAPI, client: AsyncClient
) -> None:
    owner, app_id = await _subscribed(client)
    ids = [
        (await create_key(client, owner.headers, type="app", appId=app_id))[0] for _ in range(10)
    ]
    expired = ids[:3]
    async with app.state.engine.begin() as conn:
        past = datetime.now(UTC) - timedelta(seconds=1)
        await conn.execute(update(ApiKey).where(ApiKey.id.in_(expired)).values(expires_at=past))
    await create_key(client, owner.headers, type="app", appId=app_id)  # 8 active
    await create_key(client, owner.headers, type="app", appId=app_id)  # 9 active

    async def revive(key_id: str) -> Any:
        path = f"/api/v1/api-keys/{key_id}"
        return await client.patch(path, json={"expiresTime": None}, headers=owner.headers)

    answers = await asyncio.gather(*(revive(key_id) for key_id in expired))
    assert sorted(answer.status_code for answer in answers) == [200, 400, 400]
    listed = await keys_of(client, owner.headers)
    assert sum(key["status"] == "active" for key in listed.values()) == 10


# --- lastUsedTime --------------------------------------------------------------------------------


async def test_last_used_time_survives_a_restart_and_never_goes_back(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    key_id, secret = await app_key(client, owner, app_id)
    async with node(settings) as other:  # a node that stops: its times are written on the way
        data_of(await call(other, secret, app_id, "echo", ECHO))
    async with app.state.engine.connect() as conn:
        written = await conn.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
    assert written is not None
    assert abs(written - datetime.now(UTC)) < timedelta(seconds=5)

    # Another node wrote a later use: an older time flushed here does not move it back.
    later = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    async with app.state.engine.begin() as conn:
        await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=later))
    data_of(await call(client, secret, app_id, "echo", ECHO))
    assert await app.state.keys.last_used.flush() == 1
    async with app.state.engine.connect() as conn:
        kept = await conn.scalar(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
    assert kept == later
    listed = (await keys_of(client, owner.headers))[key_id]["lastUsedTime"]
    assert listed == later.strftime("%Y-%m-%dT%H:%M:%SZ")
