"""Subscriptions over their whole lifecycle under review: an app made private stops other
workspaces' keys at once on the node that made it private (its cached "enabled" answers held the
old visibility for up to a second), concurrent and idempotent subscribes, keys that never come
back after a subscription is removed and made again (here and on a second node), and a force-
deleted app leaving its subscribers' lists and keys consistent, on both backends."""

import asyncio
from typing import Any

from httpx import AsyncClient

from apiforge.core.settings import Settings
from tests.e2e._apps import new_app
from tests.e2e._keys import app_key, call, create_key, keys_of, notes_app, subscribe
from tests.e2e._workspaces import assert_error, data_of
from tests.e2e.test_gateway_keys import WITHIN_A_SECOND, node
from tests.factories import register

ECHO = {"text": "hi"}
SUBSCRIPTIONS = "/api/v1/subscriptions"


async def _subscriptions(client: AsyncClient, headers: dict[str, str]) -> list[dict[str, Any]]:
    page = data_of(await client.get(f"{SUBSCRIPTIONS}?pageSize=100", headers=headers))
    listed: list[dict[str, Any]] = page["list"]
    return listed


# --- visibility ----------------------------------------------------------------------------------


async def test_an_app_made_private_stops_other_workspaces_keys_at_once_on_this_node(
    client: AsyncClient,
) -> None:
    """The subscription answer a call caches includes the app's visibility; making the app
    private forgot the resolved app but not those answers, so the subscriber's next calls on the
    very node that made it private were still served for up to a second."""
    owner = await register(client)
    consumer = await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    _, theirs = await app_key(client, consumer, app_id)
    _, own = await app_key(client, owner, app_id)
    for _ in range(3):  # both answers cached as "enabled"
        data_of(await call(client, theirs, app_id, "echo", ECHO))
        data_of(await call(client, own, app_id, "echo", ECHO))

    private = {"visibility": "private"}
    data_of(await client.patch(f"/api/v1/apps/{app_id}", json=private, headers=owner.headers))
    assert_error(await call(client, theirs, app_id, "echo", ECHO), 403, "app_not_enabled")
    assert data_of(await call(client, own, app_id, "echo", ECHO)) == {"echo": "hi"}

    public = {"visibility": "public"}  # and back: the subscription was never changed
    data_of(await client.patch(f"/api/v1/apps/{app_id}", json=public, headers=owner.headers))
    assert data_of(await call(client, theirs, app_id, "echo", ECHO)) == {"echo": "hi"}


async def test_a_private_app_of_another_workspace_is_not_found_like_an_unknown_one(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    stranger = await register(client)
    app_id = await notes_app(client, owner)
    unknown = await new_app(client, owner.headers, "Gone")
    data_of(await client.delete(f"/api/v1/apps/{unknown}", headers=owner.headers))
    for probe in (app_id, unknown):
        refused = await client.post(SUBSCRIPTIONS, json={"appId": probe}, headers=stranger.headers)
        assert refused.json() == {
            "code": 404,
            "message": "App not found",
            "data": {"error": "app_not_found"},
        }
    assert await _subscriptions(client, stranger.headers) == []


# --- subscribing ---------------------------------------------------------------------------------


async def test_concurrent_subscribes_make_one_subscription(client: AsyncClient) -> None:
    owner = await register(client)
    consumer = await register(client)
    app_id = await new_app(client, owner.headers, visibility="public")
    answers = await asyncio.gather(
        *(
            client.post(SUBSCRIPTIONS, json={"appId": app_id}, headers=consumer.headers)
            for _ in range(8)
        )
    )
    assert sorted(r.status_code for r in answers) == [200] + [409] * 7, [r.text for r in answers]
    [made] = [data_of(r)["id"] for r in answers if r.status_code == 200]
    for refused in (r for r in answers if r.status_code == 409):
        assert assert_error(refused, 409, "already_subscribed")["subscriptionId"] == made
    assert [s["id"] for s in await _subscriptions(client, consumer.headers)] == [made]


async def test_a_retried_subscribe_with_an_idempotency_key_replays_its_answer(
    client: AsyncClient,
) -> None:
    owner = await register(client)
    app_id = await new_app(client, owner.headers, visibility="public")
    consumer = await register(client)
    headers = {**consumer.headers, "Idempotency-Key": '"subscribe-notes-1"'}
    first = await client.post(SUBSCRIPTIONS, json={"appId": app_id}, headers=headers)
    again = await client.post(SUBSCRIPTIONS, json={"appId": app_id}, headers=headers)
    assert again.headers.get("Idempotent-Replayed") == "1"
    assert again.content == first.content
    assert [s["id"] for s in await _subscriptions(client, consumer.headers)] == [
        data_of(first)["id"]
    ]


# --- removing and subscribing again --------------------------------------------------------------


async def test_keys_of_a_removed_subscription_never_come_back(
    client: AsyncClient, settings: Settings
) -> None:
    """Subscribing again makes a new subscription with no keys: the old ones are gone for good,
    here at once and on another node within a second, while the new keys call."""
    owner = await register(client)
    consumer = await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    old_id, old = await app_key(client, consumer, app_id)
    [subscription] = await _subscriptions(client, consumer.headers)
    async with node(settings) as other:
        data_of(await call(other, old, app_id, "addNote", {"text": "kept"}))
        data_of(
            await client.delete(f"{SUBSCRIPTIONS}/{subscription['id']}", headers=consumer.headers)
        )
        again = await subscribe(client, consumer.headers, app_id)
        assert again != subscription["id"]
        assert_error(await call(client, old, app_id, "echo", ECHO), 401, "invalid_api_key")
        await asyncio.sleep(WITHIN_A_SECOND)
        for _ in range(3):
            assert_error(await call(other, old, app_id, "echo", ECHO), 401, "invalid_api_key")

        assert old_id not in await keys_of(client, consumer.headers)
        _, new = await create_key(client, consumer.headers, type="app", appId=app_id)
        notes = data_of(await call(other, new, app_id, "listNotes"))["notes"]["list"]
        assert [n["text"] for n in notes] == ["kept"]  # the workspace's partition, not the key's


async def test_a_force_deleted_app_leaves_its_subscribers_consistent(client: AsyncClient) -> None:
    owner = await register(client)
    consumer = await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    other_app = await new_app(client, owner.headers, "Other", visibility="public")
    _, secret = await app_key(client, consumer, app_id)
    kept = await subscribe(client, consumer.headers, other_app)
    data_of(await call(client, secret, app_id, "addNote", {"text": "x"}))

    refused = await client.delete(f"/api/v1/apps/{app_id}", headers=owner.headers)
    assert assert_error(refused, 409, "app_in_use")["subscribers"] == 1
    data_of(await client.delete(f"/api/v1/apps/{app_id}?force=true", headers=owner.headers))

    assert [s["id"] for s in await _subscriptions(client, consumer.headers)] == [kept]
    sorted_page = await client.get(
        f"{SUBSCRIPTIONS}?sort=appName&order=desc&enabled=1", headers=consumer.headers
    )
    assert [s["appName"] for s in data_of(sorted_page)["list"]] == ["Other"]
    assert await keys_of(client, consumer.headers) == {}
    gone = await call(client, secret, app_id, "echo", ECHO)  # the app, or (after 1 s) its key
    assert (gone.status_code, gone.json()["data"]["error"]) in {
        (404, "app_not_found"),
        (401, "invalid_api_key"),
    }
    refused = await client.post(SUBSCRIPTIONS, json={"appId": app_id}, headers=consumer.headers)
    assert_error(refused, 404, "app_not_found")
