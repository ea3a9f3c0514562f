"""A key's expiry is the second its `expiresTime` shows: a fraction of a second in the request
is dropped before it is stored, on create and on change, on both backends."""

from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from apiforge.core.errors import AuthenticationError
from apiforge.keys.models import ApiKey
from apiforge.keys.policy import KeyRecord, check_key
from tests.e2e._apps import new_app
from tests.e2e._keys import create_key, keys_of, subscribe
from tests.e2e._workspaces import data_of
from tests.factories import register

SHOWN = "2099-01-01T00:00:00Z"
WHOLE = datetime(2099, 1, 1, tzinfo=UTC)


async def _stored_expiry(app: FastAPI, key_id: str) -> datetime | None:
    async with app.state.engine.connect() as conn:
        value: datetime | None = await conn.scalar(
            select(ApiKey.expires_at).where(ApiKey.id == key_id)
        )
    return value


async def test_a_key_expires_at_the_second_its_expiry_shows(
    app: FastAPI, client: AsyncClient
) -> None:
    """`expiresTime: …T00:00:00.999Z` was shown as `…T00:00:00Z` but kept to the microsecond:
    the key still worked for most of a second after the time every listing gave as its end."""
    owner = await register(client)
    app_id = await new_app(client, owner.headers)
    await subscribe(client, owner.headers, app_id)
    key_id, _ = await create_key(
        client, owner.headers, type="app", appId=app_id, expiresTime="2099-01-01T00:00:00.999Z"
    )
    assert (await keys_of(client, owner.headers))[key_id]["expiresTime"] == SHOWN
    stored = await _stored_expiry(app, key_id)
    assert stored == WHOLE
    # Half a second past the shown end, the gateway's key check refuses it.
    record = KeyRecord(
        id=key_id,
        workspace_id="w",
        kind="app",
        app_id=app_id,
        subscription_id=None,
        role=None,
        account_id=None,
        expires_at=stored,
        revoked=False,
        allowed_ips=(),
        allowed_origins=frozenset(),
    )
    late = datetime(2099, 1, 1, 0, 0, 0, 500_000, tzinfo=UTC)
    with pytest.raises(AuthenticationError) as refused:
        check_key(record, now=late, client_ip="127.0.0.1", origin=None)
    assert refused.value.reason == "api_key_expired"

    changed = await client.patch(
        f"/api/v1/api-keys/{key_id}",
        json={"expiresTime": "2099-01-01T00:00:00.5+00:00"},
        headers=owner.headers,
    )
    assert data_of(changed)["expiresTime"] == SHOWN
    assert await _stored_expiry(app, key_id) == WHOLE
