"""Scale-out (DESIGN.md §8): two real server processes share the database (and Redis). What one
node revokes, removes or lowers, the other stops honouring within the documented window
(docs/decisions.md): keys and subscriptions 1 s, resolved apps 1 s, traffic limits and plan rates
2 s, plan quotas two refresh periods; sessions, accounts and memberships at once. Every probe runs
against the node that did NOT make the change, after it has the old answer cached."""

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.core.settings import Settings
from tests._servers import running_servers
from tests.conftest import DATABASE_URL, REDIS_URL
from tests.e2e._apps import in_workspace, new_api
from tests.e2e._keys import app_key, call, create_key, notes_app, subscribe
from tests.e2e._workspaces import add_member, assert_error, data_of, new_workspace
from tests.factories import User, make_admin, register

ORIGIN = "https://notes.example.com"
KEY_WINDOW = 1.0 + 0.1  # keys, subscriptions, resolved apps: 1 s (+ slack)
RULES_WINDOW = 2.0 + 0.1  # app traffic limits and plan rates: 2 s
QUOTA_WINDOW = 2 * 5.0 + 0.1  # plan quotas: refreshed every 5 s, re-read inline after 10 s
GIVE_UP = 20.0  # seconds of polling after which a node is taken to honour it forever

Probe = Callable[[], Awaitable[Response]]


@asynccontextmanager
async def _two_nodes(settings: Settings) -> AsyncIterator[tuple[AsyncClient, AsyncClient]]:
    """Two server processes over the test's database (and Redis), a client for each."""
    async with (
        running_servers(settings) as urls,
        AsyncClient(base_url=urls[0], timeout=30) as one,
        AsyncClient(base_url=urls[1], timeout=30) as two,
    ):
        yield one, two


async def _warm(probe: Probe, seconds: float = 0.7) -> None:
    """Call until the other node's entries are past half their TTL (a re-read may be in flight):
    the change then lands on the worst-placed cache entry."""
    deadline = time.monotonic() + seconds
    while True:
        response = await probe()
        assert response.status_code == 200, response.text
        if time.monotonic() >= deadline:
            return
        await asyncio.sleep(0.05)


async def _refused_after(probe: Probe, changed_at: float) -> tuple[Response, float]:
    """Poll until the probe is refused: the refusal, and how long after the change the last
    accepted probe was sent (the node honoured the old state at least that long; a slow answer
    cannot inflate it). Gives up past `GIVE_UP` seconds: "forever"."""
    honoured = 0.0
    while True:
        sent = time.monotonic() - changed_at
        response = await probe()
        if response.status_code != 200:
            return response, honoured
        honoured = sent
        assert honoured <= GIVE_UP, f"still honoured {honoured:.1f}s after the change"
        await asyncio.sleep(0.05)


async def _stops_within(
    probe: Probe, change: Callable[[], Awaitable[Any]], window: float
) -> Response:
    """Warm the probed node, make the change elsewhere, and check the probe is refused and was
    not honoured past `window` seconds after the change."""
    await _warm(probe)
    await change()
    response, honoured = await _refused_after(probe, time.monotonic())
    assert honoured <= window, f"honoured {honoured:.2f}s after the change (window {window}s)"
    return response


async def _sign_in(client: AsyncClient, secret: str, app_id: str, user: str) -> str:
    data = data_of(await call(client, secret, app_id, "signIn", {"user": user}))
    token: str = data["session"]["token"]
    return token


def _signed(key_id: str, secret: str, body: bytes, nonce: str | None = None) -> dict[str, str]:
    stamp, nonce = str(int(time.time())), nonce or uuid.uuid4().hex
    canonical = "\n".join(
        ["POST", "/api/v1/invocations", "", hashlib.sha256(body).hexdigest(), stamp, nonce]
    )
    sign = hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()
    return {
        "X-App-Id": key_id,
        "X-Timestamp": stamp,
        "X-Nonce": nonce,
        "X-Sign": sign,
        "Content-Type": "application/json",
    }


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _echo_body(app_id: str, text: str) -> bytes:
    body = {"appId": app_id, "api": "echo", "version": "latest", "args": {"text": text}}
    return json.dumps(body).encode()


# --- keys ----------------------------------------------------------------------------------------


async def test_revoked_app_pk_and_ws_keys_stop_on_the_other_node(settings: Settings) -> None:
    async with _two_nodes(settings) as (one, two):
        owner = await register(one)
        app_id = await notes_app(one, owner)
        app_id_key, app_secret = await app_key(one, owner, app_id)
        pk_id, pk = await create_key(
            one, owner.headers, type="pk", appId=app_id, allowedOrigins=[ORIGIN]
        )
        ws_id, ws = await create_key(one, owner.headers, type="ws", role="admin")
        _, keeper = await app_key(one, owner, app_id)
        token = await _sign_in(one, keeper, app_id, "reader")
        browser = {"Origin": ORIGIN, "Authorization": f"Bearer {token}"}
        probes: dict[str, Probe] = {
            app_id_key: lambda: call(two, app_secret, app_id, "echo", {"text": "app"}),
            pk_id: lambda: call(two, pk, app_id, "whoAmI", headers=browser),
            ws_id: lambda: call(two, ws, app_id, "echo", {"text": "ws"}),
        }

        def revoke(key_id: str) -> Callable[[], Awaitable[Any]]:
            async def change() -> None:
                data_of(await one.delete(f"/api/v1/api-keys/{key_id}", headers=owner.headers))

            return change

        refusals = await asyncio.gather(
            *(_stops_within(probe, revoke(k), KEY_WINDOW) for k, probe in probes.items())
        )
        for refused in refusals:
            assert_error(refused, 401, "api_key_revoked")
        # The management API of the other node refuses the revoked ws- key too.
        assert_error(
            await two.get("/api/v1/apps", headers={"X-Api-Key": ws}), 401, "api_key_revoked"
        )
        # The key that was left alone still works there.
        data_of(await call(two, keeper, app_id, "echo", {"text": "still"}))


@pytest.mark.skipif(not REDIS_URL, reason="nonces are shared across nodes through Redis")
async def test_signed_calls_replays_and_revocation_across_nodes(settings: Settings) -> None:
    async with _two_nodes(settings) as (one, two):
        owner = await register(one)
        app_id = await notes_app(one, owner)
        key_id, secret = await app_key(one, owner, app_id)
        body = _echo_body(app_id, "signed")
        # A nonce spent on one node is spent on the other, both ways.
        for first, second in ((one, two), (two, one)):
            headers = _signed(key_id, secret, body)
            response = await first.post("/api/v1/invocations", content=body, headers=headers)
            assert data_of(response) == {"echo": "signed"}
            replay = await second.post("/api/v1/invocations", content=body, headers=headers)
            assert_error(replay, 401, "nonce_reused")

        async def signed_call() -> Response:
            headers = _signed(key_id, secret, body)
            return await two.post("/api/v1/invocations", content=body, headers=headers)

        async def revoke() -> None:
            data_of(await one.delete(f"/api/v1/api-keys/{key_id}", headers=owner.headers))

        assert_error(await _stops_within(signed_call, revoke, KEY_WINDOW), 401, "api_key_revoked")


# --- accounts, members, subscriptions ----------------------------------------------------------


async def test_a_disabled_account_is_refused_on_the_other_node(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    admin = await make_admin(app, client)
    async with _two_nodes(settings) as (one, two):
        user = await register(one)
        app_id = await notes_app(one, user)
        _, ws = await create_key(one, user.headers, type="ws", role="admin")
        console = {"X-End-User-Token": "", **user.headers}
        for response in (
            await call(two, ws, app_id, "echo", {"text": "ws"}),
            await two.post(
                "/api/v1/invocations",
                json={"appId": app_id, "api": "echo", "version": "dev", "args": {"text": "c"}},
                headers=user.headers,
            ),
            await two.get("/api/v1/apps", headers=user.headers),
        ):
            data_of(response)

        async def disable() -> None:
            path = f"/api/v1/admin/users/{user.account_id}"
            body = {"status": "disabled"}
            data_of(await one.patch(path, json=body, headers=admin.headers))

        async def key_call() -> Response:
            return await call(two, ws, app_id, "echo", {"text": "ws"})

        refused = await _stops_within(key_call, disable, KEY_WINDOW)
        assert_error(refused, 401, "api_key_orphaned")
        # Sessions and the account are checked per request: refused at once, both edges.
        console_call = await two.post(
            "/api/v1/invocations",
            json={"appId": app_id, "api": "echo", "version": "dev", "args": {"text": "c"}},
            headers=console,
        )
        assert console_call.status_code == 401, console_call.text
        assert (await two.get("/api/v1/apps", headers=user.headers)).status_code == 401
        management = await two.get("/api/v1/apps", headers={"X-Api-Key": ws})
        assert_error(management, 401, "api_key_orphaned")


async def test_a_removed_member_loses_the_workspace_on_the_other_node(settings: Settings) -> None:
    async with _two_nodes(settings) as (one, two):
        owner, member = await register(one), await register(one)
        workspace_id = await new_workspace(one, owner)
        await add_member(one, owner, workspace_id, member, "admin")
        as_member = in_workspace(member, workspace_id)
        app_id = await notes_app(one, owner)  # the owner's personal workspace: unaffected
        team_app = data_of(
            await one.post("/api/v1/apps", json={"name": "Team"}, headers=as_member)
        )["id"]
        await new_api(
            one,
            as_member,
            team_app,
            "echo",
            params=[{"name": "text", "type": "string"}],
            steps=[{"id": "echo", "type": "set", "value": {"expr": "args.text"}}],
        )
        _, ws = await create_key(one, as_member, type="ws", role="admin")
        dev = {"appId": team_app, "api": "echo", "version": "dev", "args": {"text": "m"}}

        async def console_call() -> Response:
            return await two.post("/api/v1/invocations", json=dev, headers=member.headers)

        async def key_call() -> Response:
            return await call(two, ws, team_app, "echo", {"text": "k"}, version="dev")

        data_of(await console_call())
        data_of(await two.get("/api/v1/apps", headers=as_member))

        async def remove() -> None:
            path = f"/api/v1/workspaces/{workspace_id}/members/{member.account_id}"
            data_of(await one.delete(path, headers=owner.headers))

        assert_error(await _stops_within(key_call, remove, KEY_WINDOW), 401, "api_key_orphaned")
        assert_error(await console_call(), 404, "app_not_found")
        assert_error(await two.get("/api/v1/apps", headers=as_member), 404, "workspace_not_found")
        # The member's own workspace and the owner's app are untouched.
        _, own = await app_key(two, owner, app_id)
        data_of(await call(two, own, app_id, "echo", {"text": "fine"}))
        # Signing out on one node ends the session on the other at once, on both edges.
        data_of(await two.get("/api/v1/apps", headers=owner.headers))
        body = {"refreshToken": owner.refresh_token}
        data_of(await one.post("/api/v1/auth/logout", json=body, headers=owner.headers))
        assert_error(await two.get("/api/v1/apps", headers=owner.headers), 401, "session_revoked")
        own_dev = {"appId": app_id, "api": "echo", "version": "dev", "args": {"text": "o"}}
        refused = await two.post("/api/v1/invocations", json=own_dev, headers=owner.headers)
        assert_error(refused, 401, "session_revoked")


async def test_a_removed_subscription_and_a_private_app_stop_the_other_node(
    settings: Settings,
) -> None:
    async with _two_nodes(settings) as (one, two):
        owner = await register(one)
        app_id = await notes_app(one, owner, visibility="public")
        removed, hidden = await register(one), await register(one)
        subscription_id = await subscribe(one, removed.headers, app_id)
        _, removed_key = await create_key(one, removed.headers, type="app", appId=app_id)
        _, hidden_key = await app_key(one, hidden, app_id)

        async def removed_call() -> Response:
            return await call(two, removed_key, app_id, "echo", {"text": "r"})

        async def hidden_call() -> Response:
            return await call(two, hidden_key, app_id, "echo", {"text": "h"})

        async def unsubscribe() -> None:
            path = f"/api/v1/subscriptions/{subscription_id}"
            data_of(await one.delete(path, headers=removed.headers))

        async def make_private() -> None:
            path = f"/api/v1/apps/{app_id}"
            response = await one.patch(path, json={"visibility": "private"}, headers=owner.headers)
            data_of(response)

        gone, private = await asyncio.gather(
            _stops_within(removed_call, unsubscribe, KEY_WINDOW),
            _stops_within(hidden_call, make_private, KEY_WINDOW),
        )
        assert gone.status_code in (401, 403), gone.text
        assert private.status_code in (403, 404), private.text


async def test_a_token_signed_after_a_rotation_works_on_the_other_node(settings: Settings) -> None:
    """Node one rotates the app's signing secret with a grace; a user then signs in through node
    two, whose `jwtSign` signs with the new secret while its gateway still holds the secrets from
    before (cached for a second): the token is accepted there, not refused until that entry
    expires (the secrets are read again, `SECRET_RECHECK`)."""
    async with _two_nodes(settings) as (one, two):
        owner = await register(one)
        app_id = await notes_app(one, owner)
        _, secret = await app_key(one, owner, app_id)
        before = await _sign_in(two, secret, app_id, "before")

        async def who(token: str) -> Response:
            return await call(two, secret, app_id, "whoAmI", headers=_bearer(token))

        await _warm(lambda: who(before))
        await asyncio.sleep(0.15)  # node two's entry older than `SECRET_RECHECK`, under its TTL
        rotate = f"/api/v1/apps/{app_id}/signing-secret/rotate"
        data_of(await one.post(rotate, json={"graceSeconds": 600}, headers=owner.headers))
        after = await _sign_in(two, secret, app_id, "after")
        assert data_of(await who(after))["me"] == "after"
        assert data_of(await who(before))["me"] == "before"  # within the grace


# --- apps, versions, prices ---------------------------------------------------------------------


async def test_a_deleted_app_stops_on_the_other_node(settings: Settings) -> None:
    async with _two_nodes(settings) as (one, two):
        owner = await register(one)
        app_id = await notes_app(one, owner, visibility="public")
        _, ws = await create_key(one, owner.headers, type="ws", role="admin")

        async def owner_call() -> Response:
            return await call(two, ws, app_id, "echo", {"text": "x"})

        async def delete() -> None:
            data_of(await one.delete(f"/api/v1/apps/{app_id}", headers=owner.headers))

        assert_error(await _stops_within(owner_call, delete, KEY_WINDOW), 404, "app_not_found")


@pytest.mark.skipif(
    not DATABASE_URL.startswith("postgresql"), reason="charges from two nodes need PostgreSQL"
)
async def test_a_new_version_s_price_and_disabled_api_reach_the_other_node(
    settings: Settings,
) -> None:
    async with _two_nodes(settings) as (one, two):
        owner, consumer = await register(one), await register(one)
        app_id = await notes_app(one, owner, visibility="public")
        _, secret = await app_key(one, consumer, app_id)
        apis = data_of(await one.get(f"/api/v1/apps/{app_id}/apis", headers=owner.headers))
        ids = {api["api"]: api["id"] for api in apis["list"]}

        async def balance() -> int:
            listed = data_of(await two.get("/api/v1/wallets", headers=consumer.headers))
            return sum(w["balance"] for w in listed["list"] if w["kind"] != "earnings")

        async def echo() -> Response:
            return await call(two, secret, app_id, "echo", {"text": "x"})

        async def publish() -> None:
            base = f"/api/v1/apps/{app_id}/apis"
            for api, change in (("echo", {"enabled": False}), ("listNotes", {"price": 250})):
                response = await one.patch(f"{base}/{ids[api]}", json=change, headers=owner.headers)
                data_of(response)
            response = await one.post(
                f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=owner.headers
            )
            data_of(response)

        refused = await _stops_within(echo, publish, KEY_WINDOW)
        assert_error(refused, 403, "api_disabled")
        before = await balance()
        data_of(await call(two, secret, app_id, "listNotes"))
        await asyncio.sleep(0.6)  # charges settle in the call; wallet lists read committed rows
        assert before - await balance() == 250


# --- plans and traffic limits -------------------------------------------------------------------


async def test_lowered_plan_and_app_limits_apply_on_the_other_node(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    admin = await make_admin(app, client)
    async with _two_nodes(settings) as (one, two):
        owner = await register(one)
        app_id = await notes_app(one, owner, visibility="public")
        rated, metered, limited = await register(one), await register(one), await register(one)
        plans = {}
        for user, code in ((rated, "rated"), (metered, "metered")):
            body = {"code": code, "name": code.title(), "quotas": {"requestsPerMinute": 10_000}}
            plan = data_of(await one.post("/api/v1/admin/plans", json=body, headers=admin.headers))
            path = f"/api/v1/admin/workspaces/{user.workspace_id}/plan"
            data_of(await one.put(path, json={"planId": plan["id"]}, headers=admin.headers))
            plans[code] = plan["id"]
        limited_app = await notes_app(one, owner, visibility="public")  # its own limits
        apps = {rated.account_id: app_id, metered.account_id: app_id}
        apps[limited.account_id] = limited_app
        secrets = {}
        for user in (rated, metered, limited):
            secrets[user.account_id] = (await app_key(one, user, apps[user.account_id]))[1]

        def probe(user: User) -> Probe:
            target = apps[user.account_id]
            return lambda: call(two, secrets[user.account_id], target, "echo", {"text": "x"})

        def lower_plan(code: str, quotas: dict[str, int]) -> Callable[[], Awaitable[None]]:
            async def change() -> None:
                path = f"/api/v1/admin/plans/{plans[code]}"
                response = await one.patch(path, json={"quotas": quotas}, headers=admin.headers)
                data_of(response)

            return change

        async def lower_app_limits() -> None:
            response = await one.put(
                f"/api/v1/apps/{limited_app}/traffic-limits",
                json={"keyPerMinute": 1},
                headers=owner.headers,
            )
            data_of(response)

        rate, quota, limit = await asyncio.gather(
            _stops_within(
                probe(rated), lower_plan("rated", {"requestsPerMinute": 0}), RULES_WINDOW
            ),
            _stops_within(
                probe(metered), lower_plan("metered", {"callsPerMonth": 1}), QUOTA_WINDOW
            ),
            _stops_within(probe(limited), lower_app_limits, RULES_WINDOW),
        )
        assert_error(rate, 403, "quota_exceeded")
        assert_error(quota, 403, "quota_exceeded")
        assert_error(limit, 429, "too_many_requests")
