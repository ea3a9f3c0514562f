"""Review of an app's env and metadata edits: `PATCH /api/v1/apps/{id}` merges secrets and
replaces config, every version reads the current env, secret values never leave, concurrent
merges never lose a secret they answered for, and a visibility change applies at once."""

import asyncio
from typing import Any

from httpx import AsyncClient

from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register

PEEK = [
    set_step("secret", {"expr": "env.secrets.mailKey"}),
    set_step("config", {"expr": "env.config"}),
]


async def _dev_env(client: AsyncClient, headers: dict[str, str], app_id: str) -> Any:
    body = {"appId": app_id, "api": "peek", "version": "dev", "args": {}}
    return data_of(await client.post("/api/v1/invocations", json=body, headers=headers))


async def test_patch_sets_one_secret_without_the_others_and_null_deletes_it(
    client: AsyncClient,
) -> None:
    user = await register(client)
    app_id = await new_app(
        client,
        user.headers,
        config={"site": "A", "limit": 5},
        secrets={"mailKey": "mk-old-0001", "payKey": "pk-live-0002"},
    )
    await new_api(client, user.headers, app_id, "peek", steps=PEEK)
    url = f"/api/v1/apps/{app_id}"

    body: dict[str, Any] = {
        "secrets": {"mailKey": "mk-new-0003", "smsKey": "sms-0004"},
        "config": {"site": "B"},
    }
    changed = data_of(await client.patch(url, json=body, headers=user.headers))
    assert changed["secretNames"] == ["mailKey", "payKey", "smsKey"]  # payKey kept
    assert changed["config"] == {"site": "B"}  # config is replaced as a whole
    assert await _dev_env(client, user.headers, app_id) == {
        "secret": "mk-new-0003",
        "config": {"site": "B"},
    }

    body = {"secrets": {"payKey": None, "neverSet": None}}
    removed = data_of(await client.patch(url, json=body, headers=user.headers))
    assert removed["secretNames"] == ["mailKey", "smsKey"]
    assert removed["config"] == {"site": "B"}  # untouched when not sent

    stale = await client.patch(
        url, json={"secrets": {"mailKey": None}}, headers={**user.headers, "If-Match": '"1"'}
    )
    assert_error(stale, 412, "precondition_failed")
    app = data_of(await client.get(url, headers=user.headers))
    assert app["secretNames"] == ["mailKey", "smsKey"]


async def test_a_rotated_secret_reaches_published_versions_at_once(client: AsyncClient) -> None:
    """Env belongs to the app, not to a version: `latest` and a pinned `X.Y.Z` read the secret
    and config set after they were published, on the next call."""
    owner = await register(client)
    app_id = await new_app(
        client, owner.headers, config={"site": "A"}, secrets={"mailKey": "mk-before-0001"}
    )
    await new_api(client, owner.headers, app_id, "peek", steps=PEEK)
    url = f"/api/v1/apps/{app_id}"
    data_of(await client.post(f"{url}/versions", json={"bump": "minor"}, headers=owner.headers))
    _, key = await app_key(client, owner, app_id)
    assert data_of(await call(client, key, app_id, "peek")) == {
        "secret": "mk-before-0001",
        "config": {"site": "A"},
    }

    body = {"secrets": {"mailKey": "mk-after-0002"}, "config": {"site": "B"}}
    data_of(await client.patch(url, json=body, headers=owner.headers))
    for version in ("latest", "1.0.0"):
        answer = data_of(await call(client, key, app_id, "peek", version=version))
        assert answer == {"secret": "mk-after-0002", "config": {"site": "B"}}


async def test_secret_values_never_leave_through_any_route(client: AsyncClient) -> None:
    user = await register(client)
    value = "sv-never-shown-7f3a"
    app_id = await new_app(client, user.headers, secrets={"mailKey": value})
    await new_api(client, user.headers, app_id, "hello", steps=[set_step("s", "hi")])
    url = f"/api/v1/apps/{app_id}"
    data_of(await client.post(f"{url}/versions", json={"bump": "minor"}, headers=user.headers))
    refused = [
        await client.patch(url, json={"secrets": {"mailKey": value * 300}}, headers=user.headers),
        await client.patch(url, json={"secrets": {"bad-name": value}}, headers=user.headers),
        await client.patch(url, json={"secrets": {"k": value + "\u0000"}}, headers=user.headers),
    ]
    assert [r.status_code for r in refused] == [400, 400, 400]
    paths = (
        url,
        "/api/v1/apps",
        f"{url}/versions",
        f"{url}/versions/latest",
        f"{url}/openapi.json",
        f"{url}/docs",
        f"{url}/export",
    )
    answers = [*refused, *[await client.get(path, headers=user.headers) for path in paths]]
    assert [r.status_code for r in answers[len(refused) :]] == [200] * len(paths)
    assert all(value not in r.text for r in answers)
    assert data_of(answers[len(refused)])["secretNames"] == ["mailKey"]


async def test_concurrent_patches_of_different_secrets_never_lose_an_answered_one(
    client: AsyncClient,
) -> None:
    """Each PATCH merges into the env it read; the write is conditional on the app's version, so
    a racing loser is 409 `concurrent_update` (retry), never a 200 whose secret is gone."""
    user = await register(client)
    app_id = await new_app(client, user.headers, secrets={"base": "b-0001"})
    url = f"/api/v1/apps/{app_id}"
    responses = await asyncio.gather(
        *(
            client.patch(url, json={"secrets": {f"key{i}": f"v-{i:04}"}}, headers=user.headers)
            for i in range(6)
        )
    )
    answered = {f"key{i}" for i, r in enumerate(responses) if r.status_code == 200}
    assert answered
    for response in responses:
        if response.status_code != 200:
            assert_error(response, 409, "concurrent_update")
    names = set(data_of(await client.get(url, headers=user.headers))["secretNames"])
    assert names == {"base", *answered}


async def test_an_app_made_private_stops_outside_callers_at_once(client: AsyncClient) -> None:
    """The node that makes an app private forgets its cached subscription answers (they hold
    the app's visibility) after the commit, as it does for a changed key or subscription: the
    outside caller's next call is refused, not served and charged for up to a second more. And
    public again serves it again at once. The owner's own calls never stop."""
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    _, outside = await app_key(client, consumer, app_id)
    _, own = await app_key(client, owner, app_id)
    url = f"/api/v1/apps/{app_id}"
    assert data_of(await call(client, outside, app_id, "echo", {"text": "hi"})) == {"echo": "hi"}

    data_of(await client.patch(url, json={"visibility": "private"}, headers=owner.headers))
    refused = await call(client, outside, app_id, "echo", {"text": "hi"})
    assert_error(refused, 403, "app_not_enabled")
    assert data_of(await call(client, own, app_id, "echo", {"text": "mine"})) == {"echo": "mine"}

    data_of(await client.patch(url, json={"visibility": "public"}, headers=owner.headers))
    assert data_of(await call(client, outside, app_id, "echo", {"text": "hi"})) == {"echo": "hi"}
