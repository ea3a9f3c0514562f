"""`/api/v1/subscriptions`: a workspace enables an app (any public one, or its own private one);
disabling stops calls at once; roles, bad input and other tenants' ids change nothing."""

import re
from typing import Any

import pytest
from httpx import AsyncClient

from apiforge.keys.service import SubscriptionService
from apiforge.tools.ids import new_id
from tests.e2e._apps import new_app
from tests.e2e._keys import app_key, call, notes_app, refused_within, subscribe
from tests.e2e._workspaces import INJECTION, SCRIPT, assert_error, data_of, team
from tests.factories import register

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


async def _subscriptions(client: AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    page = data_of(await client.get("/api/v1/subscriptions?pageSize=100", headers=headers))
    subscriptions: list[dict[str, Any]] = page["list"]
    return subscriptions


async def test_public_apps_by_anyone_private_apps_only_at_home(client: AsyncClient) -> None:
    a = await register(client)
    b = await register(client)
    private = await new_app(client, a.headers, "Private")
    public = await new_app(client, a.headers, "Public", visibility="public")

    assert_error(
        await client.post("/api/v1/subscriptions", json={"appId": private}, headers=b.headers),
        404,
        "app_not_found",
    )
    b_public = await subscribe(client, b.headers, public)
    a_private = await subscribe(client, a.headers, private)

    [listed] = await _subscriptions(client, b.headers)
    assert listed["id"] == b_public
    assert (listed["appId"], listed["appName"], listed["enabled"]) == (public, "Public", 1)
    assert ISO.match(listed["createdTime"])
    assert ISO.match(listed["updatedTime"])
    assert [s["id"] for s in await _subscriptions(client, a.headers)] == [a_private]
    one = data_of(await client.get(f"/api/v1/subscriptions/{b_public}", headers=b.headers))
    assert one == listed


async def test_enabling_twice_is_a_conflict(client: AsyncClient) -> None:
    a = await register(client)
    app_id = await new_app(client, a.headers)
    subscription_id = await subscribe(client, a.headers, app_id)
    before = await _subscriptions(client, a.headers)
    data = assert_error(
        await client.post("/api/v1/subscriptions", json={"appId": app_id}, headers=a.headers),
        409,
        "already_subscribed",
    )
    assert data["subscriptionId"] == subscription_id
    assert await _subscriptions(client, a.headers) == before


async def test_roles_viewers_read_editors_switch_admins_remove(client: AsyncClient) -> None:
    owner, workspace_id, members = await team(client, "viewer", "editor", "admin")
    app_id = await new_app(client, {**owner.headers, "X-Workspace-Id": workspace_id})

    def as_(role: str) -> dict[str, str]:
        return {**members[role].headers, "X-Workspace-Id": workspace_id}

    body = {"appId": app_id}
    refused = await client.post("/api/v1/subscriptions", json=body, headers=as_("viewer"))
    assert assert_error(refused, 403, "insufficient_role")["requiredRole"] == "editor"
    assert await _subscriptions(client, as_("viewer")) == []

    subscription_id = await subscribe(client, as_("editor"), app_id)
    path = f"/api/v1/subscriptions/{subscription_id}"
    assert data_of(await client.get(path, headers=as_("viewer")))["enabled"] == 1
    assert_error(
        await client.patch(path, json={"enabled": False}, headers=as_("viewer")),
        403,
        "insufficient_role",
    )
    changed = data_of(await client.patch(path, json={"enabled": "0"}, headers=as_("editor")))
    assert changed["enabled"] == 0
    assert_error(await client.delete(path, headers=as_("editor")), 403, "insufficient_role")
    assert [s["enabled"] for s in await _subscriptions(client, as_("viewer"))] == [0]

    assert data_of(await client.delete(path, headers=as_("admin"))) == {"id": subscription_id}
    assert await _subscriptions(client, as_("viewer")) == []
    assert_error(await client.get(path, headers=as_("admin")), 404, "subscription_not_found")


async def test_bad_input_is_refused_and_changes_nothing(client: AsyncClient) -> None:
    a = await register(client)
    app_id = await new_app(client, a.headers)
    subscription_id = await subscribe(client, a.headers, app_id)
    before = await _subscriptions(client, a.headers)
    post = "/api/v1/subscriptions"
    h = {**a.headers, "Content-Type": "application/json"}

    assert_error(await client.post(post, content=b'{"appId": ', headers=h), 400, "malformed_json")
    assert_error(await client.post(post, json={}, headers=h), 400, "missing_parameters")
    for body in (
        {"appId": 42},
        {"appId": ["x"]},
        {"appId": "x" * 65},
        {"appId": ""},
        {"appId": app_id, "enabled": True},
    ):
        assert_error(await client.post(post, json=body, headers=h), 400, "invalid_input")
    for app in (INJECTION, SCRIPT, new_id()):
        assert_error(await client.post(post, json={"appId": app}, headers=h), 404, "app_not_found")

    path = f"{post}/{subscription_id}"
    patches: list[dict[str, Any]] = [
        {"enabled": "maybe"},
        {"enabled": None},
        {"enabled": 2},
        {"name": "x"},
        {},
    ]
    for patch in patches:
        response = await client.patch(path, json=patch, headers=h)
        assert response.status_code == 400, (patch, response.text)
    assert_error(await client.get(f"{post}?enabled=yes", headers=h), 400, "invalid_input")
    assert_error(await client.get(f"{post}?sort=secret", headers=h), 400, "invalid_sort_field")
    for other in (INJECTION, "x" * 300, new_id()):
        assert_error(await client.get(f"{post}/{other}", headers=h), 404, "subscription_not_found")
    assert await _subscriptions(client, a.headers) == before


async def test_list_filters_and_sorts(client: AsyncClient) -> None:
    a = await register(client)
    first = await subscribe(client, a.headers, await new_app(client, a.headers, "Beta"))
    second = await subscribe(client, a.headers, await new_app(client, a.headers, "Alpha"))
    await client.patch(f"/api/v1/subscriptions/{first}", json={"enabled": False}, headers=a.headers)

    def ids(response: Any) -> list[str]:
        return [s["id"] for s in data_of(response)["list"]]

    base = "/api/v1/subscriptions"
    assert ids(await client.get(f"{base}?enabled=true", headers=a.headers)) == [second]
    assert ids(await client.get(f"{base}?enabled=0", headers=a.headers)) == [first]
    assert ids(await client.get(f"{base}?sort=appName&order=asc", headers=a.headers)) == [
        second,
        first,
    ]
    page = data_of(await client.get(f"{base}?pageSize=1&pageNo=2", headers=a.headers))
    assert (page["totalCount"], page["totalPage"], len(page["list"])) == (2, 2, 1)


async def test_another_workspaces_subscription_is_not_found(client: AsyncClient) -> None:
    a = await register(client)
    b = await register(client)
    public = await new_app(client, a.headers, visibility="public")
    b_sub = await subscribe(client, b.headers, public)
    before = await _subscriptions(client, b.headers)
    path = f"/api/v1/subscriptions/{b_sub}"
    for response in (
        await client.get(path, headers=a.headers),
        await client.patch(path, json={"enabled": False}, headers=a.headers),
        await client.delete(path, headers=a.headers),
    ):
        assert_error(response, 404, "subscription_not_found")
    assert await _subscriptions(client, b.headers) == before


async def test_disabling_stops_calls_at_once_and_enabling_restores_them(
    client: AsyncClient,
) -> None:
    a = await register(client)
    app_id = await notes_app(client, a)
    _, secret = await app_key(client, a, app_id)
    [subscription] = await _subscriptions(client, a.headers)
    path = f"/api/v1/subscriptions/{subscription['id']}"
    assert data_of(await call(client, secret, app_id, "echo", {"text": "on"})) == {"echo": "on"}

    data_of(await client.patch(path, json={"enabled": False}, headers=a.headers))
    refused = await call(client, secret, app_id, "addNote", {"text": "while off"})
    assert_error(refused, 403, "app_not_enabled")
    data_of(await client.patch(path, json={"enabled": True}, headers=a.headers))
    assert data_of(await call(client, secret, app_id, "listNotes"))["notes"]["list"] == []


async def test_a_call_during_the_disabling_request_caches_nothing_stale(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call that reads the subscription while the request disabling it has not committed yet
    (it still reads "enabled") must not leave that in the cache: the cache forgets it once the
    change commits, so the next call is refused at once (it passed for up to a second when the
    cache forgot before the commit)."""
    a = await register(client)
    app_id = await notes_app(client, a)
    _, secret = await app_key(client, a, app_id)
    [subscription] = await _subscriptions(client, a.headers)
    path = f"/api/v1/subscriptions/{subscription['id']}"
    during: list[int] = []
    app_name = SubscriptionService._app_name

    async def call_meanwhile(self: SubscriptionService, app: str) -> str:
        during.append((await call(client, secret, app_id, "echo", {"text": "x"})).status_code)
        return await app_name(self, app)

    monkeypatch.setattr(SubscriptionService, "_app_name", call_meanwhile)
    data_of(await client.patch(path, json={"enabled": False}, headers=a.headers))
    assert during == [200]  # the disabling was not committed yet
    monkeypatch.undo()
    refused = await call(client, secret, app_id, "echo", {"text": "after"})
    assert_error(refused, 403, "app_not_enabled")


async def test_an_app_made_private_stops_serving_other_workspaces(client: AsyncClient) -> None:
    a = await register(client)
    b = await register(client)
    app_id = await notes_app(client, a, visibility="public")
    _, b_secret = await app_key(client, b, app_id)
    _, a_secret = await app_key(client, a, app_id)
    assert data_of(await call(client, b_secret, app_id, "echo", {"text": "hi"})) == {"echo": "hi"}

    private = {"visibility": "private"}
    data_of(await client.patch(f"/api/v1/apps/{app_id}", json=private, headers=a.headers))
    refused, elapsed = await refused_within(
        client, b_secret, app_id, "echo", {"text": "hi"}, seconds=2.0
    )
    assert_error(refused, 403, "app_not_enabled")
    assert elapsed <= 1.5
    assert data_of(await call(client, a_secret, app_id, "echo", {"text": "home"})) == {
        "echo": "home"
    }

    [b_sub] = await _subscriptions(client, b.headers)
    path = f"/api/v1/subscriptions/{b_sub['id']}"
    data_of(await client.patch(path, json={"enabled": False}, headers=b.headers))
    assert_error(
        await client.patch(path, json={"enabled": True}, headers=b.headers), 403, "app_not_public"
    )
    assert [s["enabled"] for s in await _subscriptions(client, b.headers)] == [0]


async def test_removing_a_subscription_removes_its_keys(client: AsyncClient) -> None:
    a = await register(client)
    app_id = await notes_app(client, a)
    _, secret = await app_key(client, a, app_id)
    [subscription] = await _subscriptions(client, a.headers)
    data_of(await client.delete(f"/api/v1/subscriptions/{subscription['id']}", headers=a.headers))
    assert_error(await call(client, secret, app_id, "echo", {"text": "x"}), 401, "invalid_api_key")
    page = data_of(await client.get("/api/v1/api-keys", headers=a.headers))
    assert page["list"] == []
