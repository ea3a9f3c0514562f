"""Today's gateway-adjacent infrastructure reviewed: repeated `X-HTTP-Method-Override` lines read
alike on both edges, and per-IP limits grouping the IPv6 forms that carry an IPv4 client
(NAT64, 6to4, Teredo, IPv4-compatible) by that client rather than by a /64 many clients share
or one client owns many of."""

from typing import Any

import pytest
from httpx import AsyncClient

from apiforge.core.settings import Settings
from apiforge.tools.netpolicy import limit_group
from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._keys import app_key
from tests.e2e._traffic import limited_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import PASSWORD, app_client, register

INVOCATIONS = "/api/v1/invocations"
OVERRIDE = "X-HTTP-Method-Override"

# --- X-HTTP-Method-Override on several lines ----------------------------------------------------


async def _workspace_names(client: AsyncClient, headers: dict[str, str]) -> list[str]:
    listed = data_of(await client.get("/api/v1/workspaces", headers=headers))["list"]
    return sorted(w["name"] for w in listed)


def _lines(headers: dict[str, str], *overrides: str) -> list[tuple[str, str]]:
    """`headers` plus one `X-HTTP-Method-Override` line per value, in order."""
    return [*headers.items(), *((OVERRIDE, value) for value in overrides)]


@pytest.mark.parametrize("overrides", [("POST", "DELETE"), ("DELETE", "POST"), ("PUT", "PATCH")])
async def test_differing_override_lines_are_a_400_on_the_management_api(
    client: AsyncClient, overrides: tuple[str, ...]
) -> None:
    """The management API read the first line and the gateway the last: `POST` then `DELETE`
    created a workspace here while the gateway took the same request for a DELETE. Lines that
    disagree say no one method: 400, and nothing runs."""
    user = await register(client)
    before = await _workspace_names(client, user.headers)
    response = await client.post(
        "/api/v1/workspaces", json={"name": "Team"}, headers=_lines(user.headers, *overrides)
    )
    data = assert_error(response, 400, "invalid_method_override")
    assert data["errors"][0]["field"] == OVERRIDE
    assert await _workspace_names(client, user.headers) == before


async def test_differing_override_lines_do_not_delete_on_the_management_api(
    client: AsyncClient,
) -> None:
    """`DELETE` then `POST` on a workspace's path deleted it (the first line won)."""
    user = await register(client)
    made = data_of(
        await client.post("/api/v1/workspaces", json={"name": "Kept"}, headers=user.headers)
    )
    path = f"/api/v1/workspaces/{made['id']}"
    response = await client.post(path, headers=_lines(user.headers, "DELETE", "POST"))
    assert_error(response, 400, "invalid_method_override")
    assert "Kept" in await _workspace_names(client, user.headers)


async def _hello(client: AsyncClient) -> tuple[str, dict[str, Any]]:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await new_api(client, user.headers, app_id, "hello", steps=[set_step("greeting", "hi")])
    _, secret = await app_key(client, user, app_id)
    return secret, {"appId": app_id, "api": "hello", "version": "dev", "args": {}}


@pytest.mark.parametrize("overrides", [("PUT", "POST"), ("POST", "PUT"), ("DELETE", "PATCH")])
async def test_differing_override_lines_are_a_400_on_the_gateway(
    client: AsyncClient, overrides: tuple[str, ...]
) -> None:
    """`PUT` then `POST` ran the call on the gateway (the last line, `POST`, won) where the
    management API would have taken it for a PUT; `POST` then `PUT` was a 405 there. Both
    edges now answer 400 to lines that disagree."""
    secret, body = await _hello(client)
    headers = _lines({"X-Api-Key": secret}, *overrides)
    response = await client.post(INVOCATIONS, json=body, headers=headers)
    data = assert_error(response, 400, "invalid_method_override")
    assert data["errors"][0]["field"] == OVERRIDE
    assert "X-Request-ID" in response.headers


async def test_repeated_lines_naming_one_method_count_as_one(client: AsyncClient) -> None:
    """The same method on several lines (in any case) is one ask, honoured on both edges."""
    secret, body = await _hello(client)
    moved = await client.post(
        INVOCATIONS, json=body, headers=_lines({"X-Api-Key": secret}, "PUT", "put")
    )
    assert_error(moved, 405, "method_not_allowed")
    same = await client.post(
        INVOCATIONS, json=body, headers=_lines({"X-Api-Key": secret}, "POST", "post")
    )
    assert data_of(same) == {"greeting": "hi"}
    user = await register(client)
    made = data_of(
        await client.post("/api/v1/workspaces", json={"name": "Gone"}, headers=user.headers)
    )
    path = f"/api/v1/workspaces/{made['id']}"
    deleted = await client.post(path, headers=_lines(user.headers, "DELETE", "delete"))
    assert deleted.status_code == 200, deleted.text
    assert "Gone" not in await _workspace_names(client, user.headers)


# --- per-IP limits: IPv6 forms that carry an IPv4 client ---------------------------------------

# Teredo (RFC 4380): server 65.54.227.120, clients 192.0.2.45 and 198.51.100.10 (obfuscated).
TEREDO_A = "2001:0:4136:e378:8000:63bf:3fff:fdd2"
TEREDO_B = "2001:0:4136:e378:8000:63bf:39cc:9bf5"


@pytest.mark.parametrize(
    ("address", "group"),
    [
        ("203.0.113.5", "203.0.113.5"),
        ("2001:db8:1:2:aaaa::7", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2::7]:443", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),  # a zone names an interface, not another client
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("64:ff9b::203.0.113.5", "203.0.113.5"),  # NAT64 / SIIT well-known prefix
        ("64:ff9b::cb00:7105", "203.0.113.5"),
        ("::203.0.113.5", "203.0.113.5"),  # IPv4-compatible (deprecated)
        ("::1", "::/64"),  # loopback is no IPv4-compatible address
        ("2002:cb00:7105:1::1", "203.0.113.5"),  # 6to4: the site of one IPv4 address
        ("2002:cb00:7105:ffff:1::9", "203.0.113.5"),
        (TEREDO_A, "192.0.2.45"),
        (TEREDO_B, "198.51.100.10"),
        ("unknown", "unknown"),
        ("", ""),
    ],
)
def test_limit_group_of_odd_and_embedded_addresses(address: str, group: str) -> None:
    assert limit_group(address) == group


def _behind_proxy(settings: Settings) -> Settings:
    return settings.model_copy(update={"trusted_proxies": ["127.0.0.1"]})


async def _from(client: AsyncClient, secret: str, app_id: str, address: str) -> int:
    body = {"appId": app_id, "api": "echo", "version": "latest", "args": {"text": "a"}}
    headers = {"X-Api-Key": secret, "X-Forwarded-For": address}
    return (await client.post(INVOCATIONS, json=body, headers=headers)).status_code


async def test_ip_per_minute_counts_each_ipv4_client_behind_nat64_on_its_own(
    settings: Settings,
) -> None:
    """Behind a NAT64/SIIT-DC translator every IPv4 client reaches an IPv6-only server as
    `64:ff9b::<its IPv4>`: all of them fell in one /64, so one client's calls used up
    `ipPerMinute` for the whole IPv4 internet. Each counts as its IPv4 address now."""
    async with app_client(_behind_proxy(settings)) as (_, client):
        owner = await register(client)
        app_id, secret = await limited_app(client, owner, ipPerMinute=1)
        assert await _from(client, secret, app_id, "64:ff9b::203.0.113.7") == 200
        assert await _from(client, secret, app_id, "64:ff9b::198.51.100.9") == 200
        assert await _from(client, secret, app_id, "64:ff9b::cb00:7107") == 429  # the same one
        assert await _from(client, secret, app_id, "203.0.113.7") == 429  # the same client
        assert await _from(client, secret, app_id, TEREDO_A) == 200
        assert await _from(client, secret, app_id, TEREDO_B) == 200  # same server, other client


async def test_ip_per_minute_counts_a_6to4_site_once(settings: Settings) -> None:
    """A 6to4 site (`2002:<IPv4>::/48`) owns 65,536 /64s and stepped through them to call
    without limit; it is one client, its IPv4 address."""
    async with app_client(_behind_proxy(settings)) as (_, client):
        owner = await register(client)
        app_id, secret = await limited_app(client, owner, ipPerMinute=1)
        assert await _from(client, secret, app_id, "2002:cb00:7107:1::1") == 200
        assert await _from(client, secret, app_id, "2002:cb00:7107:2::1") == 429
        assert await _from(client, secret, app_id, "2002:cb00:7108:1::1") == 200


async def test_failed_sign_ins_behind_nat64_throttle_only_their_client(
    settings: Settings,
) -> None:
    """The sign-in throttle counted every NAT64-translated IPv4 client as one /64: five wrong
    passwords from one locked every other IPv4 client out of signing in."""
    own = _behind_proxy(settings).model_copy(update={"login_max_failures": 5})
    async with app_client(own) as (_, client):
        user = await register(client)

        async def sign_in(email: str, password: str, address: str) -> Any:
            body = {"email": email, "password": password}
            headers = {"X-Forwarded-For": address}
            return await client.post("/api/v1/auth/login", json=body, headers=headers)

        attacker = "64:ff9b::198.51.100.66"
        for n in range(5):
            wrong = await sign_in(f"nobody{n}@example.com", "wrong password 1", attacker)
            assert_error(wrong, 401, "invalid_credentials")
        assert_error(
            await sign_in("nobody9@example.com", "wrong password 1", attacker),
            429,
            "login_throttled",
        )
        ok = await sign_in(user.email, PASSWORD, "64:ff9b::203.0.113.7")
        assert ok.status_code == 200, ok.text
