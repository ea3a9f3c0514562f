"""An explicit `null` in a PATCH body, for a field that cannot be null, is a 400 naming the field
and changes nothing, on every resource: apps, plans and the profile used to ignore it (a 200 that
changed nothing, though `null` reads as "clear it"), as API keys, APIs and workspaces did not."""

from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from tests.e2e._apps import new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import make_admin, register


def _refused_naming(response: Any, field: str) -> None:
    data = assert_error(response, 400, "invalid_input")
    assert [e["field"] for e in data["errors"]] == [field]


@pytest.mark.parametrize("field", ["name", "description", "visibility", "config", "secrets"])
async def test_a_null_app_field_is_a_400_and_changes_nothing(
    client: AsyncClient, field: str
) -> None:
    user = await register(client)
    app_id = await new_app(
        client, user.headers, "Blog", description="d", config={"a": 1}, secrets={"token": "s"}
    )
    path = f"/api/v1/apps/{app_id}"
    before = data_of(await client.get(path, headers=user.headers))

    _refused_naming(await client.patch(path, json={field: None}, headers=user.headers), field)

    assert data_of(await client.get(path, headers=user.headers)) == before
    # A secret set to null is still deleted: that null has a meaning.
    cleared = await client.patch(path, json={"secrets": {"token": None}}, headers=user.headers)
    assert data_of(cleared)["secretNames"] == []


@pytest.mark.parametrize(
    "field", ["code", "name", "description", "quotas", "isDefault", "isPublic"]
)
async def test_a_null_plan_field_is_a_400_and_changes_nothing(
    app: FastAPI, client: AsyncClient, field: str
) -> None:
    admin = await make_admin(app, client)
    body = {"code": "team", "name": "Team", "description": "d", "isPublic": 0}
    created = await client.post("/api/v1/admin/plans", json=body, headers=admin.headers)
    path = f"/api/v1/admin/plans/{data_of(created)['id']}"
    before = data_of(await client.get(path, headers=admin.headers))

    _refused_naming(await client.patch(path, json={field: None}, headers=admin.headers), field)

    assert data_of(await client.get(path, headers=admin.headers)) == before


@pytest.mark.parametrize("field", ["name", "avatarUrl", "locale"])
async def test_a_null_profile_field_is_a_400_and_changes_nothing(
    client: AsyncClient, field: str
) -> None:
    user = await register(client, name="Ada")
    path = "/api/v1/user/profile"
    body = {"avatarUrl": "https://example.com/a.png", "locale": "en-GB"}
    before = data_of(await client.patch(path, json=body, headers=user.headers))

    _refused_naming(await client.patch(path, json={field: None}, headers=user.headers), field)

    assert data_of(await client.get(path, headers=user.headers)) == before
    # An empty string is how an avatar is removed.
    assert (
        data_of(await client.patch(path, json={"avatarUrl": ""}, headers=user.headers))["avatarUrl"]
        == ""
    )
