"""Review of the step engine's bounds over HTTP, on both backends: the names a `forEach` may bind
and the version numbers a publish may make."""

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import update

from apiforge.builder.models import ApiDefinition, App, AppVersion
from tests.e2e._apps import apis_of, new_api, new_app, set_step
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register


async def test_a_foreach_binding_a_cel_keyword_is_refused_when_saved(client: AsyncClient) -> None:
    """`"as": "null"` was saved; every read of the item then read the literal `null`."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    loop = {
        "id": "loop",
        "type": "forEach",
        "items": [1, 2],
        "maxIterations": 2,
        "as": "null",
        "collect": {"expr": "null"},
    }
    response = await client.post(
        f"/api/v1/apps/{app_id}/apis", json={"api": "each", "steps": [loop]}, headers=user.headers
    )
    (error,) = assert_error(response, 400, "invalid_definition")["errors"]
    assert error["field"] == "steps.loop.as"
    assert "'null'" in error["message"]
    assert await apis_of(client, user.headers, app_id) == {}


async def test_an_api_stored_with_such_a_binding_runs_but_is_not_saved_or_published_again(
    app: FastAPI, client: AsyncClient
) -> None:
    """Stored before the check (`"as": "size"` read its item), an API keeps answering; saving or
    publishing it names the step."""
    user = await register(client)
    h = user.headers
    app_id = await new_app(client, h)
    api_id = await new_api(client, h, app_id, "each", steps=[set_step("a", 1)])
    loop = {
        "id": "loop",
        "type": "forEach",
        "items": [1, 2],
        "maxIterations": 2,
        "as": "size",
        "collect": {"expr": "size * 10"},
    }
    async with app.state.engine.begin() as conn:
        await conn.execute(
            update(ApiDefinition).where(ApiDefinition.id == api_id).values(steps=[loop])
        )
    body = {"appId": app_id, "api": "each", "version": "dev"}
    assert data_of(await client.post("/api/v1/invocations", json=body, headers=h)) == {
        "loop": [10, 20]
    }
    published = await client.post(
        f"/api/v1/apps/{app_id}/versions", json={"bump": "minor"}, headers=h
    )
    (error,) = assert_error(published, 400, "invalid_definition")["errors"]
    assert error["field"] == "apis.each.steps.loop.as"
    saved = await client.patch(
        f"/api/v1/apps/{app_id}/apis/{api_id}", json={"api": "each", "steps": [loop]}, headers=h
    )
    assert assert_error(saved, 400, "invalid_definition")["errors"][0]["field"] == "steps.loop.as"


async def test_no_version_is_published_past_what_a_pin_or_an_invocation_can_name(
    app: FastAPI, client: AsyncClient
) -> None:
    """A publish numbered parts up to 999,999,999 and past them, while a `callApi` pin and an
    invocation took 6 digits: a version like 1000000.0.0 could be published and never called."""
    user = await register(client)
    h = user.headers
    app_id = await new_app(client, h)
    await new_api(client, h, app_id, "hello", steps=[set_step("a", 1)])
    url = f"/api/v1/apps/{app_id}/versions"
    data_of(await client.post(url, json={"bump": "minor"}, headers=h))
    top = 999_999_999
    async with app.state.engine.begin() as conn:  # as after a billion major bumps
        await conn.execute(
            update(AppVersion)
            .where(AppVersion.app_id == app_id)
            .values(version=f"{top}.0.0", major=top)
        )
        await conn.execute(update(App).where(App.id == app_id).values(latest_version=f"{top}.0.0"))

    refused = await client.post(url, json={"bump": "major"}, headers=h)
    assert_error(refused, 409, "version_limit_reached")
    assert data_of(await client.get(url, headers=h))["totalCount"] == 1

    assert data_of(await client.post(url, json={"bump": "minor"}, headers=h))["version"] == (
        f"{top}.1.0"
    )
    body = {"appId": app_id, "api": "hello", "version": f"{top}.1.0"}
    assert data_of(await client.post("/api/v1/invocations", json=body, headers=h)) == {"a": 1}
    pin = {"id": "c", "type": "callApi", "api": "hello", "version": f"{top}.1.0"}
    await new_api(client, h, app_id, "caller", steps=[pin])
    called = {"appId": app_id, "api": "caller", "version": "dev"}
    assert data_of(await client.post("/api/v1/invocations", json=called, headers=h)) == {
        "c": {"a": 1}
    }
