"""A burst of calls right after a start must not exhaust the connection pool: every stage and
step uses the call's own connection (loading a cold secret through a second pooled connection
once deadlocked the pool under 15+ concurrent first calls)."""

import asyncio

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from tests.e2e._keys import app_key, call, notes_app
from tests.e2e._plans import on_plan
from tests.e2e._workspaces import data_of
from tests.factories import make_admin, register


async def test_a_burst_of_first_calls_on_a_fresh_node_all_succeed(
    app: FastAPI, client: AsyncClient, settings: Settings
) -> None:
    owner = await register(client)
    # The burst is about the pool, not the plan's limit of calls in flight: lift that limit.
    admin = await make_admin(app, client)
    await on_plan(client, admin, owner.workspace_id, "burst", concurrentRequests=-1)
    app_id = await notes_app(client, owner)
    _, key = await app_key(client, owner, app_id)
    signed = data_of(await call(client, key, app_id, "signIn", {"user": "reader-1"}))
    headers = {"Authorization": f"Bearer {signed['session']['token']}"}

    fresh = create_app(settings)  # cold caches: every call must load the app's secret
    transport = ASGITransport(app=fresh, raise_app_exceptions=False)
    try:
        async with AsyncClient(transport=transport, base_url="http://testserver") as node:
            responses = await asyncio.wait_for(
                asyncio.gather(
                    *[call(node, key, app_id, "whoAmI", headers=headers) for _ in range(40)]
                ),
                timeout=25,
            )
    finally:
        await shutdown(fresh)
    assert [r.status_code for r in responses] == [200] * 40
    assert {data_of(r)["me"] for r in responses} == {"reader-1"}
