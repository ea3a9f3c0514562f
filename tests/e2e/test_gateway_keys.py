"""`POST /api/v1/invocations` with `app-`, `pk-` and `ws-` keys, and `ws-` keys on the management
API: binding, expiry, revocation seen by a second node, IP allow-lists behind (and around) proxies,
publishable-key origins, and cross-workspace attempts — each refusal with its status and reason,
and nothing changed.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from httpx import ASGITransport, AsyncClient, Response

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.keys.crypto import new_secret
from tests.e2e._apps import new_api, new_app
from tests.e2e._keys import (
    app_key,
    call,
    create_key,
    keys_of,
    notes_app,
    refused_within,
    subscribe,
)
from tests.e2e._workspaces import assert_error, data_of, team
from tests.factories import User, register

ORIGIN = "https://notes.example.com"
WITHIN_A_SECOND = 1.5  # the cache TTL (1 s) plus the polling step and the call itself


@asynccontextmanager
async def node(
    settings: Settings, client_address: tuple[str, int] = ("127.0.0.1", 123)
) -> AsyncIterator[AsyncClient]:
    """Another server process over the same database (and Redis): its own app, caches, pools."""
    application = create_app(settings)
    transport = ASGITransport(app=application, raise_app_exceptions=False, client=client_address)
    try:
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http
    finally:
        await shutdown(application)


async def _notes(client: AsyncClient, secret: str, app_id: str) -> list[str]:
    data = data_of(await call(client, secret, app_id, "listNotes"))
    return sorted(note["text"] for note in data["notes"]["list"])


async def _sign_in(client: AsyncClient, secret: str, app_id: str, user: str) -> str:
    token: str = data_of(await call(client, secret, app_id, "signIn", {"user": user}))["session"][
        "token"
    ]
    return token


# --- app- keys -----------------------------------------------------------------------------------


async def test_an_app_key_calls_its_app_in_its_workspace_partition(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, secret = await app_key(client, owner, app_id)
    data = data_of(await call(client, secret, app_id, "addNote", {"text": "first"}))
    assert data["note"]["text"] == "first"
    assert await _notes(client, secret, app_id) == ["first"]
    # The builder's own console view of the dataset shows the same partition.
    page = data_of(await client.get("/api/v1/datasets", headers=owner.headers))
    [dataset] = page["list"]
    records = await client.get(f"/api/v1/datasets/{dataset['id']}/records", headers=owner.headers)
    assert [r["text"] for r in data_of(records)["list"]] == ["first"]


async def test_unknown_and_malformed_keys_are_401(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    for secret in (new_secret("app"), new_secret("ws"), "app-short", "'; DROP TABLE api_keys; --"):
        assert_error(
            await call(client, secret, app_id, "echo", {"text": "x"}), 401, "invalid_api_key"
        )
    body = {"appId": app_id, "api": "echo", "args": {"text": "x"}}
    nothing = await client.post("/api/v1/invocations", json=body)
    assert nothing.status_code == 401
    _, secret = await app_key(client, owner, app_id)
    # A key is not a console token: in `Authorization` it is refused, never guessed at.
    as_bearer = await client.post(
        "/api/v1/invocations", json=body, headers={"Authorization": f"Bearer {secret}"}
    )
    assert as_bearer.status_code == 401
    assert await _notes(client, secret, app_id) == []


async def test_an_app_key_is_bound_to_its_app(client: AsyncClient) -> None:
    owner = await register(client)
    notes = await notes_app(client, owner)
    other = await notes_app(client, owner)
    _, notes_secret = await app_key(client, owner, notes)
    _, other_secret = await app_key(client, owner, other)
    refused = await call(client, notes_secret, other, "addNote", {"text": "wrong app"})
    assert_error(refused, 403, "key_not_for_app")
    assert await _notes(client, other_secret, other) == []


async def test_an_expired_key_stops_working(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    expires = datetime.now(UTC) + timedelta(seconds=2)
    key_id, secret = await app_key(client, owner, app_id, expiresTime=expires.isoformat())
    assert data_of(await call(client, secret, app_id, "echo", {"text": "ok"})) == {"echo": "ok"}
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.1)
    assert_error(await call(client, secret, app_id, "echo", {"text": "x"}), 401, "api_key_expired")
    assert (await keys_of(client, owner.headers))[key_id]["status"] == "expired"


async def test_a_revoked_key_is_refused_at_once_on_the_same_node(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    key_id, secret = await app_key(client, owner, app_id)
    data_of(await call(client, secret, app_id, "echo", {"text": "warm the cache"}))
    data_of(await client.delete(f"/api/v1/api-keys/{key_id}", headers=owner.headers))
    refused = await call(client, secret, app_id, "addNote", {"text": "after revoke"})
    assert_error(refused, 401, "api_key_revoked")
    _, fresh = await app_key(client, owner, app_id)
    assert await _notes(client, fresh, app_id) == []


async def test_a_second_node_refuses_a_revoked_key_within_a_second(
    client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    key_id, secret = await app_key(client, owner, app_id)
    async with node(settings) as other:
        # Node 2 has the key cached as valid when node 1 revokes it.
        for _ in range(3):
            data_of(await call(other, secret, app_id, "echo", {"text": "node 2"}))
        data_of(await client.delete(f"/api/v1/api-keys/{key_id}", headers=owner.headers))
        revoked_at = time.monotonic()
        refused, _ = await refused_within(
            other, secret, app_id, "echo", {"text": "x"}, seconds=WITHIN_A_SECOND
        )
        assert_error(refused, 401, "api_key_revoked")
        assert time.monotonic() - revoked_at <= WITHIN_A_SECOND


async def test_a_second_node_stops_calls_of_a_disabled_subscription_within_a_second(
    client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, secret = await app_key(client, owner, app_id)
    listed = data_of(await client.get("/api/v1/subscriptions", headers=owner.headers))["list"]
    async with node(settings) as other:
        data_of(await call(other, secret, app_id, "echo", {"text": "node 2"}))
        path = f"/api/v1/subscriptions/{listed[0]['id']}"
        data_of(await client.patch(path, json={"enabled": False}, headers=owner.headers))
        disabled_at = time.monotonic()
        refused, _ = await refused_within(
            other, secret, app_id, "echo", {"text": "x"}, seconds=WITHIN_A_SECOND
        )
        assert_error(refused, 403, "app_not_enabled")
        assert time.monotonic() - disabled_at <= WITHIN_A_SECOND


# --- IP allow-lists and proxies ---------------------------------------------------------------


async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, limited = await app_key(client, owner, app_id, allowedIps=["203.0.113.0/24"])
    _, open_key = await create_key(client, owner.headers, type="app", appId=app_id)
    for forwarded in ("203.0.113.9", "203.0.113.9, 203.0.113.10", "unknown"):
        refused = await call(
            client, limited, app_id, "addNote", {"text": "spoofed"},
            headers={"X-Forwarded-For": forwarded},
        )  # fmt: skip
        assert_error(refused, 403, "ip_not_allowed")
    assert await _notes(client, open_key, app_id) == []


async def test_forwarded_for_is_honoured_from_a_trusted_proxy(
    client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, limited = await app_key(client, owner, app_id, allowedIps=["203.0.113.0/24"])
    _, open_key = await create_key(client, owner.headers, type="app", appId=app_id)
    behind_proxy = settings.model_copy(update={"trusted_proxies": ["127.0.0.1/32"]})
    async with node(behind_proxy) as proxied:

        async def via_proxy(forwarded: str, text: str) -> Response:
            headers = {"X-Forwarded-For": forwarded}
            return await call(proxied, limited, app_id, "addNote", {"text": text}, headers=headers)

        data_of(await via_proxy("203.0.113.9", "through the proxy"))
        # The client forged the left entry; the proxy appended the address it really saw.
        assert_error(await via_proxy("203.0.113.9, 198.51.100.7", "forged"), 403, "ip_not_allowed")
        assert_error(await via_proxy("198.51.100.7", "outside"), 403, "ip_not_allowed")
        # Without the header the proxy itself is the client, and it is not allowed.
        plain = await call(proxied, limited, app_id, "addNote", {"text": "proxy itself"})
        assert_error(plain, 403, "ip_not_allowed")
    async with node(settings, ("203.0.113.50", 4000)) as direct:
        data_of(await call(direct, limited, app_id, "addNote", {"text": "direct"}))
    assert await _notes(client, open_key, app_id) == ["direct", "through the proxy"]


async def test_workspace_key_allow_lists_guard_the_management_api(
    client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    _, secret = await create_key(
        client, owner.headers, type="ws", role="editor", allowedIps=["203.0.113.0/24"]
    )
    spoofed = {"X-Api-Key": secret, "X-Forwarded-For": "203.0.113.9"}
    assert_error(await client.get("/api/v1/apps", headers=spoofed), 403, "ip_not_allowed")
    refused = await client.post("/api/v1/apps", json={"name": "Sneaky"}, headers=spoofed)
    assert_error(refused, 403, "ip_not_allowed")
    behind_proxy = settings.model_copy(update={"trusted_proxies": ["127.0.0.0/8"]})
    async with node(behind_proxy) as proxied:
        assert data_of(await proxied.get("/api/v1/apps", headers=spoofed))["list"] == []


# --- publishable keys ------------------------------------------------------------------------


async def test_publishable_keys_need_an_allowed_origin_and_a_token_api(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, server_key = await app_key(client, owner, app_id)
    _, pk = await create_key(
        client, owner.headers, type="pk", appId=app_id, allowedOrigins=[ORIGIN]
    )
    token = await _sign_in(client, server_key, app_id, "reader-1")
    with_token = {"Origin": ORIGIN, "Authorization": f"Bearer {token}"}

    response = await call(client, pk, app_id, "whoAmI", headers=with_token)
    assert data_of(response) == {"me": "reader-1"}
    assert response.headers["access-control-allow-origin"] == ORIGIN

    for origin in ("https://evil.example.com", "http://notes.example.com", ""):
        refused = await call(client, pk, app_id, "whoAmI", headers={**with_token, "Origin": origin})
        assert_error(refused, 403, "origin_not_allowed")
        assert "access-control-allow-origin" not in refused.headers
    no_origin = await call(
        client, pk, app_id, "whoAmI", headers={"Authorization": f"Bearer {token}"}
    )
    assert_error(no_origin, 403, "origin_not_allowed")
    # Only APIs that need an end-user token (or are marked public).
    refused = await call(
        client, pk, app_id, "addNote", {"text": "from a browser"}, headers=with_token
    )
    assert_error(refused, 403, "publishable_key_not_allowed")
    assert_error(
        await call(client, pk, app_id, "whoAmI", headers={"Origin": ORIGIN}), 401, "token_required"
    )
    assert await _notes(client, server_key, app_id) == []


# --- ws- keys --------------------------------------------------------------------------------


async def test_a_workspace_key_calls_its_own_workspaces_apps(client: AsyncClient) -> None:
    a = await register(client)
    b = await register(client)
    app_id = await notes_app(client, a, visibility="public")
    _, a_ws = await create_key(client, a.headers, type="ws", role="viewer")
    _, b_ws = await create_key(client, b.headers, type="ws", role="admin")
    data_of(await call(client, a_ws, app_id, "addNote", {"text": "by ws key"}))
    assert await _notes(client, a_ws, app_id) == ["by ws key"]
    # A workspace key never reaches another workspace's app, public or not.
    assert_error(await call(client, b_ws, app_id, "listNotes"), 404, "app_not_found")


async def test_workspace_keys_on_the_management_api_with_their_role(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner, publish=False)
    _, viewer = await create_key(client, owner.headers, type="ws", role="viewer")
    _, editor = await create_key(client, owner.headers, type="ws", role="editor")
    as_viewer, as_editor = {"X-Api-Key": viewer}, {"Authorization": f"Bearer {editor}"}

    apps = data_of(await client.get("/api/v1/apps", headers=as_viewer))
    assert [a["id"] for a in apps["list"]] == [app_id]
    datasets = data_of(await client.get("/api/v1/datasets", headers=as_viewer))
    assert [d["name"] for d in datasets["list"]] == ["notes"]
    workflow = {"appId": app_id, "steps": [{"id": "x", "type": "set", "value": 42}]}

    refused = await client.post("/api/v1/apps", json={"name": "By viewer"}, headers=as_viewer)
    assert assert_error(refused, 403, "insufficient_role")["requiredRole"] == "editor"
    refused = await client.post("/api/v1/workflows", json=workflow, headers=as_viewer)
    assert_error(refused, 403, "insufficient_role")
    assert data_of(await client.get("/api/v1/apps", headers=owner.headers))["totalCount"] == 1

    created = data_of(await client.post("/api/v1/apps", json={"name": "By key"}, headers=as_editor))
    assert (
        data_of(await client.get(f"/api/v1/apps/{created['id']}", headers=owner.headers))["name"]
        == "By key"
    )
    assert data_of(await client.post("/api/v1/workflows", json=workflow, headers=as_editor)) == {
        "x": 42
    }
    body = {"appId": created["id"], "name": "tags", "fields": []}
    data_of(await client.post("/api/v1/datasets", json=body, headers=as_editor))
    # Deleting an app needs admin: more than the key's role.
    assert_error(
        await client.delete(f"/api/v1/apps/{created['id']}", headers=as_editor),
        403,
        "insufficient_role",
    )


async def test_workspace_keys_stay_inside_their_workspace(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "editor")
    _, secret = await create_key(client, owner.headers, type="ws", role="admin")
    key = {"X-Api-Key": secret}
    for workspace in (workspace_id, members["editor"].workspace_id):
        response = await client.get("/api/v1/apps", headers={**key, "X-Workspace-Id": workspace})
        assert_error(response, 404, "workspace_not_found")
        assert_error(
            await client.get(f"/api/v1/workspaces/{workspace}", headers=key),
            404,
            "workspace_not_found",
        )
    # Person-level and platform-admin routes refuse keys outright.
    for path in ("/api/v1/user/profile", "/api/v1/workspaces", "/api/v1/admin/users"):
        assert_error(await client.get(path, headers=key), 403, "workspace_key_not_allowed")
    refused = await client.patch("/api/v1/user/profile", json={"name": "Key"}, headers=key)
    assert_error(refused, 403, "workspace_key_not_allowed")
    profile = data_of(await client.get("/api/v1/user/profile", headers=owner.headers))
    assert profile["name"] != "Key"
    # Its own workspace, by path too.
    mine = data_of(await client.get(f"/api/v1/workspaces/{owner.workspace_id}", headers=key))
    assert mine["id"] == owner.workspace_id


async def test_app_keys_are_not_management_credentials(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await notes_app(client, owner)
    _, secret = await app_key(client, owner, app_id)
    for headers in ({"X-Api-Key": secret}, {"Authorization": f"Bearer {secret}"}):
        response = await client.get("/api/v1/apps", headers=headers)
        assert response.status_code == 401
    assert_error(
        await client.get("/api/v1/apps", headers={"X-Api-Key": new_secret("ws")}),
        401,
        "invalid_api_key",
    )


async def test_a_workspace_key_never_outranks_or_outlives_its_creator(
    client: AsyncClient,
) -> None:
    owner, workspace_id, members = await team(client, "admin")
    admin = members["admin"]
    in_team = {**admin.headers, "X-Workspace-Id": workspace_id}
    _, secret = await create_key(client, in_team, type="ws", role="admin")
    key = {"X-Api-Key": secret}
    app_id = data_of(await client.post("/api/v1/apps", json={"name": "A"}, headers=key))["id"]

    # Demoted to viewer: the key can only read, whatever role it was given — at once on the
    # node that made the change (its cached record of the key is forgotten; other nodes
    # within the cache's second).
    path = f"/api/v1/workspaces/{workspace_id}/members/{admin.account_id}"
    data_of(await client.patch(path, json={"role": "viewer"}, headers=owner.headers))
    assert data_of(await client.get(f"/api/v1/apps/{app_id}", headers=key))["id"] == app_id
    refused = await client.post("/api/v1/apps", json={"name": "B"}, headers=key)
    assert_error(refused, 403, "insufficient_role")

    # Removed from the workspace: the key stops, at once here too.
    data_of(await client.delete(path, headers=owner.headers))
    assert_error(await client.get("/api/v1/apps", headers=key), 401, "api_key_orphaned")


async def test_a_removed_members_workspace_key_is_refused_at_once_on_the_same_node(
    client: AsyncClient,
) -> None:
    """The member's `ws-` key was cached as allowed by its last call: removing the member used
    to leave it working for up to a second on the very node that removed them. Keys the
    member made elsewhere, and the other members' keys, are untouched."""
    owner, workspace_id, members = await team(client, "admin", "editor")
    admin = members["admin"]
    in_team = {**admin.headers, "X-Workspace-Id": workspace_id}
    app_id = data_of(await client.post("/api/v1/apps", json={"name": "Team"}, headers=in_team))[
        "id"
    ]
    await new_api(
        client,
        in_team,
        app_id,
        "echo",
        params=[{"name": "text", "type": "string"}],
        steps=[{"id": "echo", "type": "set", "value": {"expr": "args.text"}}],
    )
    _, secret = await create_key(client, in_team, type="ws", role="admin")
    _, own = await create_key(client, admin.headers, type="ws", role="admin")  # their own space
    editors = {**members["editor"].headers, "X-Workspace-Id": workspace_id}
    _, other = await create_key(client, editors, type="ws", role="editor")
    for key in (secret, other):
        data_of(await call(client, key, app_id, "echo", {"text": "k"}, version="dev"))
    data_of(await client.get("/api/v1/apps", headers={"X-Api-Key": own}))

    path = f"/api/v1/workspaces/{workspace_id}/members/{admin.account_id}"
    data_of(await client.delete(path, headers=owner.headers))
    refused = await call(client, secret, app_id, "echo", {"text": "k"}, version="dev")
    assert_error(refused, 401, "api_key_orphaned")
    refused = await client.get("/api/v1/apps", headers={"X-Api-Key": secret})
    assert_error(refused, 401, "api_key_orphaned")
    data_of(await call(client, other, app_id, "echo", {"text": "k"}, version="dev"))
    data_of(await client.get("/api/v1/apps", headers={"X-Api-Key": own}))


async def test_a_transfer_updates_both_members_workspace_keys_at_once_on_the_same_node(
    client: AsyncClient,
) -> None:
    """A `ws-` key acts with the lesser of its role and its creator's role, as cached by its last
    call: an ownership transfer changes both members' roles, and used to leave their keys on the
    roles from before for up to a second on the very node that made it (the heir's `admin` key,
    made while an admin and cached while an editor, kept acting as an editor)."""
    owner, workspace_id, members = await team(client, "admin")
    heir = members["admin"]
    _, heirs = await create_key(
        client, {**heir.headers, "X-Workspace-Id": workspace_id}, type="ws", role="admin"
    )
    _, owners = await create_key(
        client, {**owner.headers, "X-Workspace-Id": workspace_id}, type="ws", role="admin"
    )
    path = f"/api/v1/workspaces/{workspace_id}/members/{heir.account_id}"
    data_of(await client.patch(path, json={"role": "editor"}, headers=owner.headers))
    heir_key, owner_key = {"X-Api-Key": heirs}, {"X-Api-Key": owners}
    app_id = data_of(await client.post("/api/v1/apps", json={"name": "A"}, headers=heir_key))["id"]
    data_of(await client.get("/api/v1/apps", headers=owner_key))  # both cached now

    moved = await client.post(
        f"/api/v1/workspaces/{workspace_id}/transfer",
        json={"accountId": heir.account_id},
        headers=owner.headers,
    )
    assert data_of(moved)["ownerId"] == heir.account_id
    # Deleting an app takes an admin: the heir (now owner) key's `admin` role counts at once.
    assert data_of(await client.delete(f"/api/v1/apps/{app_id}", headers=heir_key))["id"] == app_id
    # The old owner is an admin now; their `admin` key stays one (a key is never an owner).
    other = data_of(await client.post("/api/v1/apps", json={"name": "B"}, headers=owner_key))
    assert data_of(await client.delete(f"/api/v1/apps/{other['id']}", headers=owner_key))


# --- across workspaces -----------------------------------------------------------------------


async def _cross_setup(client: AsyncClient) -> tuple[User, User, str, str]:
    a = await register(client)
    b = await register(client)
    private = await notes_app(client, a)
    public = await notes_app(client, a, visibility="public")
    return a, b, private, public


async def test_another_workspace_cannot_reach_a_private_app(client: AsyncClient) -> None:
    a, b, private, public = await _cross_setup(client)
    _, a_key = await app_key(client, a, private)
    data_of(await call(client, a_key, private, "addNote", {"text": "A's"}))

    assert_error(
        await client.post("/api/v1/subscriptions", json={"appId": private}, headers=b.headers),
        404,
        "app_not_found",
    )
    _, b_key = await app_key(client, b, public)
    # Bound to another tenant's app: the same 404 as an unknown app (no clue it exists).
    assert_error(await call(client, b_key, private, "listNotes"), 404, "app_not_found")
    _, b_ws = await create_key(client, b.headers, type="ws", role="admin")
    assert_error(await call(client, b_ws, private, "listNotes"), 404, "app_not_found")
    body = {"type": "app", "name": "steal", "appId": private}
    assert_error(
        await client.post("/api/v1/api-keys", json=body, headers=b.headers),
        404,
        "subscription_not_found",
    )
    assert await _notes(client, a_key, private) == ["A's"]


async def test_a_consumer_of_a_public_app_reads_and_writes_only_its_partition(
    client: AsyncClient,
) -> None:
    a, b, _private, public = await _cross_setup(client)
    _, a_key = await app_key(client, a, public)
    data_of(await call(client, a_key, public, "addNote", {"text": "A's note"}))

    b_sub = await subscribe(client, b.headers, public)
    _, b_key = await create_key(client, b.headers, type="app", appId=public)
    assert await _notes(client, b_key, public) == []
    data_of(await call(client, b_key, public, "addNote", {"text": "B's note"}))
    assert await _notes(client, b_key, public) == ["B's note"]
    assert await _notes(client, a_key, public) == ["A's note"]

    # B's end-user token is not valid in A's partition, and the other way round.
    b_token = await _sign_in(client, b_key, public, "b-user")
    a_token = await _sign_in(client, a_key, public, "a-user")
    as_b = {"Authorization": f"Bearer {b_token}"}
    assert data_of(await call(client, b_key, public, "whoAmI", headers=as_b)) == {"me": "b-user"}
    refused = await call(client, a_key, public, "whoAmI", headers=as_b)
    assert_error(refused, 401, "token_workspace_mismatch")
    refused = await call(
        client, b_key, public, "whoAmI", headers={"Authorization": f"Bearer {a_token}"}
    )
    assert_error(refused, 401, "token_workspace_mismatch")

    # Disabling B's subscription stops B only.
    path = f"/api/v1/subscriptions/{b_sub}"
    data_of(await client.patch(path, json={"enabled": False}, headers=b.headers))
    assert_error(
        await call(client, b_key, public, "addNote", {"text": "while off"}), 403, "app_not_enabled"
    )
    data_of(await call(client, a_key, public, "addNote", {"text": "A again"}))
    data_of(await client.patch(path, json={"enabled": True}, headers=b.headers))
    assert await _notes(client, b_key, public) == ["B's note"]
    assert await _notes(client, a_key, public) == ["A again", "A's note"]


async def test_browser_preflight_is_answered_without_a_key(client: AsyncClient) -> None:
    response = await client.options(
        "/api/v1/invocations",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key, authorization, content-type",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == ORIGIN
    allowed = response.headers["access-control-allow-headers"].lower()
    for header in ("x-api-key", "authorization", "content-type"):
        assert header in allowed
    assert response.headers["access-control-allow-methods"] == "POST"


async def test_publishable_keys_may_call_apis_marked_public(client: AsyncClient) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers, "Public notes")
    await new_api(
        client,
        owner.headers,
        app_id,
        "hello",
        steps=[{"id": "greeting", "type": "set", "value": "hi"}],
        auth={"public": 1},
    )
    await new_api(
        client,
        owner.headers,
        app_id,
        "closed",
        steps=[{"id": "greeting", "type": "set", "value": "no"}],
    )
    detail = await client.get(f"/api/v1/apps/{app_id}/apis?q=hello", headers=owner.headers)
    assert data_of(detail)["list"][0]["api"] == "hello"
    data_of(
        await client.post(
            f"/api/v1/apps/{app_id}/versions", json={"bump": "major"}, headers=owner.headers
        )
    )
    await subscribe(client, owner.headers, app_id)
    _, pk = await create_key(
        client, owner.headers, type="pk", appId=app_id, allowedOrigins=[ORIGIN]
    )
    public = await call(client, pk, app_id, "hello", headers={"Origin": ORIGIN})
    assert data_of(public) == {"greeting": "hi"}
    closed = await call(client, pk, app_id, "closed", headers={"Origin": ORIGIN})
    assert_error(closed, 403, "publishable_key_not_allowed")


async def test_a_subscriber_never_reaches_dev(client: AsyncClient) -> None:
    """`dev` holds the builder's unpublished and disabled APIs: a subscriber's key finds no
    such version (the builder's own keys call it, as the other tests do)."""
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    hidden = [{"id": "s", "type": "set", "value": "internal"}]
    await new_api(client, owner.headers, app_id, "secretOp", steps=hidden, price=100, enabled=0)
    _, secret = await app_key(client, consumer, app_id)
    for api in ("secretOp", "listNotes"):
        refused = await call(client, secret, app_id, api, version="dev")
        assert_error(refused, 404, "version_not_found")
    assert_error(await call(client, secret, app_id, "secretOp"), 404, "api_not_found")
    _, own = await app_key(client, owner, app_id)
    assert data_of(await call(client, own, app_id, "secretOp", version="dev")) == {"s": "internal"}


async def test_refusals_give_no_clue_of_another_tenant_s_app(client: AsyncClient) -> None:
    """A key of one's own app, a `ws-` key or a console token sent to another tenant's private
    app: the same 404 as an unknown app, without the `Deprecation` header its version has."""
    owner, victim = await register(client), await register(client)
    app_id = await notes_app(client, owner)
    private = await notes_app(client, victim)
    versions = data_of(await client.get(f"/api/v1/apps/{private}/versions", headers=victim.headers))
    url = f"/api/v1/apps/{private}/versions/{versions['list'][0]['version']}"
    data_of(await client.patch(url, json={"deprecated": 1}, headers=victim.headers))
    _, secret = await app_key(client, owner, app_id)
    _, ws = await create_key(client, owner.headers, type="ws", role="viewer")
    body = {"appId": private, "api": "listNotes", "version": "latest", "args": {}}
    for headers in ({"X-Api-Key": secret}, {"X-Api-Key": ws}, owner.headers):
        refused = await client.post("/api/v1/invocations", json=body, headers=headers)
        assert_error(refused, 404, "app_not_found")
        assert "Deprecation" not in refused.headers
    _, victims = await app_key(client, victim, private)
    allowed = await call(client, victims, private, "listNotes")
    assert allowed.headers["Deprecation"].startswith("@")
