"""Revoking is idempotent: concurrent identical `DELETE /api-keys/{id}` all succeed, once."""

import asyncio

from httpx import AsyncClient

from tests.e2e._keys import app_key, notes_app
from tests.e2e._workspaces import data_of
from tests.factories import register


async def test_concurrent_revokes_of_one_key_all_succeed(client: AsyncClient) -> None:
    """Several keys, each revoked by 8 requests at once: on SQLite the read of the key must be
    the writer's, or a revoke committing between another's read and write made it 409."""
    owner = await register(client)
    app_id = await notes_app(client, owner)
    for _ in range(12):
        key_id, _secret = await app_key(client, owner, app_id)
        path = f"/api/v1/api-keys/{key_id}"
        responses = await asyncio.gather(
            *(client.delete(path, headers=owner.headers) for _ in range(8))
        )
        assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
        read = data_of(await client.get(path, headers=owner.headers))
        assert (read["status"], read["version"]) == ("revoked", 2)
