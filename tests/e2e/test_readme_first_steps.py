"""The README's "First steps", request for request, on a fresh install's settings (new workspaces
start at 0 RU): each step answers as the README leads its reader to expect."""

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.core.settings import Settings
from tests.factories import make_admin

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"welcome_credits": Settings().welcome_credits})


def _ok(response: Any) -> Any:
    assert response.status_code in (200, 201), response.text
    return response.json()["data"]


async def test_the_readme_first_steps_work_on_a_fresh_install(
    app: FastAPI, client: AsyncClient
) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    # The steps this test follows are the README's.
    for step in (
        "/api/v1/auth/login",
        "/api/v1/workspaces -H",
        "/api/v1/admin/wallets/$WS/credits",
        "/api/v1/apps/import",
        '\\"version\\": \\"dev\\"',
        "/api/v1/apps/$APP/versions",
        "/api/v1/subscriptions",
        "/api/v1/api-keys",
    ):
        assert step in readme, step
    admin = await make_admin(app, client)
    h = admin.headers
    blog = json.loads((ROOT / "examples" / "blog-app.json").read_text(encoding="utf-8"))
    app_id = _ok(await client.post("/api/v1/apps/import", json=blog, headers=h))["id"]
    call = {"appId": app_id, "api": "getManyPost", "version": "dev", "args": {}, "debug": 1}
    # Without the README's credit step, a fresh workspace cannot pay its own call.
    refused = await client.post("/api/v1/invocations", json=call, headers=h)
    assert refused.status_code == 402, refused.text

    workspace = _ok(await client.get("/api/v1/workspaces", headers=h))["list"][0]["id"]
    credit = {"amount": 100000, "note": "first steps"}
    _ok(await client.post(f"/api/v1/admin/wallets/{workspace}/credits", json=credit, headers=h))
    assert "trace" in _ok(await client.post("/api/v1/invocations", json=call, headers=h))

    release = {"bump": "major", "notes": "first release"}
    _ok(await client.post(f"/api/v1/apps/{app_id}/versions", json=release, headers=h))
    _ok(await client.post("/api/v1/subscriptions", json={"appId": app_id}, headers=h))
    key_body = {"type": "app", "name": "server", "appId": app_id}
    key = _ok(await client.post("/api/v1/api-keys", json=key_body, headers=h))["key"]
    consumer_call = {"appId": app_id, "api": "getManyPost", "args": {}}
    data = _ok(
        await client.post("/api/v1/invocations", json=consumer_call, headers={"X-Api-Key": key})
    )
    assert isinstance(data, dict)
