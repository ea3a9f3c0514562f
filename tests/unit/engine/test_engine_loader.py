"""The loader: published versions compiled once per process, `dev` recompiled only on change."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.engine import loader as loader_module
from apiforge.engine.loader import (
    ApiLoader,
    ApiNotFoundError,
    AppNotFoundError,
    VersionNotFoundError,
)
from tests.e2e._workspaces import data_of
from tests.factories import register


async def _setup(client: AsyncClient) -> tuple[dict[str, str], str, str]:
    user = await register(client)
    app_id = data_of(await client.post("/api/v1/apps", json={"name": "A"}, headers=user.headers))[
        "id"
    ]
    api_id = data_of(
        await client.post(
            f"/api/v1/apps/{app_id}/apis",
            json={"api": "hello", "steps": [{"id": "a", "type": "set", "value": 1}]},
            headers=user.headers,
        )
    )["id"]
    return user.headers, app_id, api_id


async def _publish(client: AsyncClient, headers: dict[str, str], app_id: str) -> str:
    response = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=headers
    )
    version: str = data_of(response)["version"]
    return version


async def test_published_versions_are_compiled_once(app: FastAPI, client: AsyncClient) -> None:
    headers, app_id, _ = await _setup(client)
    version = await _publish(client, headers, app_id)
    loader = ApiLoader()
    async with app.state.engine.connect() as conn:
        latest = await loader.target(conn, app_id, "latest")
        assert (latest.version, latest.deprecated) == (version, False)
        first = await loader.load(conn, latest, "hello")
        again = await loader.load(conn, await loader.target(conn, app_id, version), "hello")
    assert first is again
    assert [step.id for step in first.steps] == ["a"]


async def test_dev_is_compiled_again_only_after_a_change(app: FastAPI, client: AsyncClient) -> None:
    headers, app_id, api_id = await _setup(client)
    loader = ApiLoader()

    async def load() -> Any:
        async with app.state.engine.connect() as conn:
            return await loader.load(conn, await loader.target(conn, app_id, "dev"), "hello")

    first = await load()
    assert await load() is first
    response = await client.patch(
        f"/api/v1/apps/{app_id}/apis/{api_id}",
        json={"steps": [{"id": "b", "type": "set", "value": 2}]},
        headers=headers,
    )
    data_of(response)
    changed = await load()
    assert changed is not first
    assert [step.id for step in changed.steps] == ["b"]


async def test_unknown_targets_are_404s(app: FastAPI, client: AsyncClient) -> None:
    headers, app_id, _ = await _setup(client)
    loader: ApiLoader = app.state.engine_state.loader  # publishing forgets its cached targets
    async with app.state.engine.connect() as conn:
        with pytest.raises(AppNotFoundError):
            await loader.target(conn, "nope", "dev")
        missing = await loader.target(conn, app_id, "latest")
        assert missing.version is None
        with pytest.raises(VersionNotFoundError):
            await loader.load(conn, missing, "hello")
        with pytest.raises(ApiNotFoundError):
            await loader.load(conn, await loader.target(conn, app_id, "dev"), "other")
    await _publish(client, headers, app_id)
    async with app.state.engine.connect() as conn:
        published = await loader.target(conn, app_id, "latest")
        with pytest.raises(ApiNotFoundError):
            await loader.load(conn, published, "other")


async def test_targets_are_cached_briefly_and_forgotten_on_change(
    app: FastAPI, client: AsyncClient
) -> None:
    """Another node's change is seen within TARGET_TTL; this node's own at once."""
    headers, app_id, _ = await _setup(client)
    await _publish(client, headers, app_id)
    loader = ApiLoader()
    clock = [1000.0]
    loader.clock = lambda: clock[0]
    async with app.state.engine.connect() as conn:
        first = await loader.target(conn, app_id, "latest")
        assert first.deprecated is False
    response = await client.patch(
        f"/api/v1/apps/{app_id}/versions/{first.version}", json={"deprecated": 1}, headers=headers
    )
    assert response.status_code == 200, response.text
    async with app.state.engine.connect() as conn:
        assert (await loader.target(conn, app_id, "latest")).deprecated is False  # cached
        clock[0] += loader_module.TARGET_TTL + 0.01
        assert (await loader.target(conn, app_id, "latest")).deprecated is True  # expired
        loader.forget_app(app_id)
        assert (await loader.target(conn, app_id, "latest")).deprecated is True
