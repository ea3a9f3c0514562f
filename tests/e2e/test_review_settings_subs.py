"""Settings, subscriptions, `/user/plans` and the system endpoints under review: the account
allowance shown for the plan that enforces it, the app-setting cap under concurrent writes, a key
created while its subscription is removed, and a changelog heading no integer can hold."""

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from apiforge.accounts import settings_service
from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.keys.holding import hold_referenced
from tests.e2e._apps import new_app
from tests.e2e._keys import keys_of, subscribe
from tests.e2e._workspaces import assert_error, data_of, new_workspace, team
from tests.factories import User, make_admin, register


async def _usage(client: AsyncClient, user: User, workspace_id: str) -> dict[str, dict[str, Any]]:
    headers = {**user.headers, "X-Workspace-Id": workspace_id}
    plans = data_of(await client.get("/api/v1/user/plans", headers=headers))
    return {u["quota"]: u for u in plans["usage"]}


async def test_user_plans_shows_the_workspace_allowance_of_the_plan_that_enforces_it(
    app: FastAPI, client: AsyncClient
) -> None:
    """`workspaces` is counted for the caller against their personal workspace's plan, so a team
    workspace on a roomier plan must not show that plan's limit (nor its owner's count)."""
    admin = await make_admin(app, client)
    owner, workspace_id, members = await team(client, "viewer")
    roomy = data_of(
        await client.post(
            "/api/v1/admin/plans",
            json={"code": "roomy", "name": "Roomy", "quotas": {"workspaces": 50}},
            headers=admin.headers,
        )
    )["id"]
    moved = await client.put(
        f"/api/v1/admin/workspaces/{workspace_id}/plan",
        json={"planId": roomy},
        headers=admin.headers,
    )
    assert moved.status_code == 200, moved.text

    # The owner's personal plan (free: 3) decides; they own two, so one more is allowed.
    shown = (await _usage(client, owner, workspace_id))["workspaces"]
    assert (shown["limit"], shown["used"]) == (3, 2)
    await new_workspace(client, owner, "third")
    shown = (await _usage(client, owner, workspace_id))["workspaces"]
    assert (shown["limit"], shown["used"], shown["warning"]) == (3, 3, 1)
    refused = await client.post(
        "/api/v1/workspaces", json={"name": "fourth"}, headers=owner.headers
    )
    assert assert_error(refused, 403, "quota_exceeded")["limit"] == shown["limit"]

    # A member sees their own allowance, not the owner's count.
    viewer = members["viewer"]
    shown = (await _usage(client, viewer, workspace_id))["workspaces"]
    assert (shown["limit"], shown["used"]) == (3, 1)


async def test_concurrent_new_app_settings_stop_at_the_account_limit(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each request counted the keys before any of them wrote, so all passed the same count."""
    monkeypatch.setattr(settings_service, "MAX_APP_SETTINGS", 3)
    user = await register(client)
    answers = await asyncio.gather(
        *(
            client.put(
                f"/api/v1/user/settings/apps/app/k{n}", json={"value": n}, headers=user.headers
            )
            for n in range(8)
        )
    )
    assert sorted(r.status_code for r in answers) == [200] * 3 + [403] * 5
    for refused in (r for r in answers if r.status_code == 403):
        assert_error(refused, 403, "settings_limit_reached")
    listed = data_of(await client.get("/api/v1/user/settings/apps/app", headers=user.headers))
    assert listed["totalCount"] == 3


async def test_key_of_a_subscription_removed_meanwhile_is_404_not_500(
    client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The subscription is read, then removed by another request before the key takes its
    locks (`hold_referenced`, after which a removal waits for the key): the key would point at
    nothing, which the foreign key refused with a 500."""
    user = await register(client)
    app_id = await new_app(client, user.headers, "Shared", visibility="public")
    subscription_id = await subscribe(client, user.headers, app_id)
    removed: list[int] = []
    started: list[bool] = []

    async def remove_meanwhile(*args: Any, **kwargs: Any) -> None:
        if not started:  # the key's hold; the removal's own passes through
            started.append(True)
            path = f"/api/v1/subscriptions/{subscription_id}"
            removed.append((await client.delete(path, headers=user.headers)).status_code)
        await hold_referenced(*args, **kwargs)

    monkeypatch.setattr("apiforge.keys.service.hold_referenced", remove_meanwhile)
    response = await client.post(
        "/api/v1/api-keys",
        json={"type": "app", "name": "late", "appId": app_id},
        headers=user.headers,
    )
    monkeypatch.undo()
    assert removed == [200]
    assert_error(response, 404, "subscription_not_found")
    assert await keys_of(client, user.headers) == {}


async def test_version_skips_a_release_heading_too_long_to_read(
    settings: Settings, tmp_path: Path
) -> None:
    """A version number past CPython's 4,300-digit integer limit made `/api/v1/version` a 500;
    like any heading it cannot read, it is skipped with its section."""
    notes = tmp_path / "CHANGELOG.md"
    notes.write_text(
        f"## [1.2.0] - 2030-01-01\n- Kept.\n\n## [{'9' * 5000}.0.0]\n- Dropped.\n\n"
        f"## [1.0.0-{'1' * 5000}]\n- Dropped too.\n"
    )
    application = create_app(settings.model_copy(update={"changelog_path": notes}))
    transport = ASGITransport(app=application, raise_app_exceptions=False)
    try:
        async with AsyncClient(transport=transport, base_url="http://testserver") as http:
            response = await http.get("/api/v1/version")
    finally:
        await shutdown(application)
    data = data_of(response)
    assert data["latestVersion"] == "1.2.0"
    assert data["releaseList"] == [
        {"version": "1.2.0", "date": "2030-01-01", "yanked": 0, "changes": {"other": ["Kept."]}}
    ]
