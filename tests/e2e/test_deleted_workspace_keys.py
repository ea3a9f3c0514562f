"""A deleted workspace's keys stop at once on the node that deleted it: a call in the cache's
second would write records into a partition nobody can ever read or delete."""

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from apiforge.datasets.models import Record
from tests.e2e._apps import in_workspace
from tests.e2e._keys import call, create_key, notes_app, subscribe
from tests.e2e._workspaces import assert_error, data_of, new_workspace
from tests.factories import make_admin, register

pytestmark = pytest.mark.anyio


async def _records_of(app: FastAPI, workspace_id: str) -> int:
    async with app.state.engine.connect() as connection:
        counted = select(func.count()).select_from(Record).where(Record.partition == workspace_id)
        return int(await connection.scalar(counted) or 0)


async def test_a_deleted_workspaces_key_is_refused_at_once(
    app: FastAPI, client: AsyncClient
) -> None:
    owner, consumer = await register(client), await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    team = await new_workspace(client, consumer)
    headers = in_workspace(consumer, team)
    await subscribe(client, headers, app_id)
    _, secret = await create_key(client, headers, type="app", appId=app_id)
    data_of(await call(client, secret, app_id, "addNote", {"text": "before"}))  # cached now
    assert await _records_of(app, team) == 1

    deleted = await client.delete(f"/api/v1/workspaces/{team}", headers=consumer.headers)
    assert data_of(deleted) == {"id": team}

    assert_error(
        await call(client, secret, app_id, "addNote", {"text": "after"}), 401, "invalid_api_key"
    )
    assert await _records_of(app, team) == 0


async def test_a_deleted_accounts_workspace_keys_are_refused_at_once(
    app: FastAPI, client: AsyncClient
) -> None:
    owner, consumer = await register(client), await register(client)
    admin = await make_admin(app, client)
    app_id = await notes_app(client, owner, visibility="public")
    await subscribe(client, consumer.headers, app_id)
    _, secret = await create_key(client, consumer.headers, type="app", appId=app_id)
    data_of(await call(client, secret, app_id, "addNote", {"text": "before"}))

    deleted = await client.delete(
        f"/api/v1/admin/users/{consumer.account_id}", headers=admin.headers
    )
    assert deleted.status_code == 200, deleted.text

    assert_error(
        await call(client, secret, app_id, "addNote", {"text": "after"}), 401, "invalid_api_key"
    )
    assert await _records_of(app, consumer.workspace_id) == 0
