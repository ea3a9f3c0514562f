"""The idempotency sweep and renewed management claims: a keyed management request may outlive
its lease (its claim is renewed while the route runs), so a record claimed longer ago than
lease + retention can still be live — a claim under a route still running, or the answer such a
route stored late, within its retention. The sweep used to delete them by their claim time
alone, and a retry then ran the request a second time."""

import asyncio
import time
from datetime import timedelta

from fastapi import FastAPI
from httpx import AsyncClient, Response
from sqlalchemy import func, select, update

from apiforge.builder.models import App
from apiforge.core.settings import Settings
from apiforge.idempotency.keys import record_id
from apiforge.idempotency.models import IdempotencyRecord
from apiforge.idempotency.store import IdempotencyStore, shared_store
from apiforge.tools.clock import utcnow
from tests.e2e._apps import new_app
from tests.e2e._traffic import slow_upstream
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, app_client, register

KEY = "Idempotency-Key"
# The shortest lease and retention a server accepts: a route of a few minutes outlives both.
SHORT = {"idempotency_lease_seconds": 60, "idempotency_retention_seconds": 60}


def _store(app: FastAPI) -> IdempotencyStore:
    state = app.state
    return shared_store(state.gateway_state.extra, state.settings, state.redis)


def _rid(user: User, key: str) -> str:
    """A console user's key in their personal workspace (no `X-Workspace-Id` sent)."""
    return record_id("key", f"{user.workspace_id}|acct:{user.account_id}", key)


async def _age(app: FastAPI, rid: str, claimed: float, expires: float) -> None:
    """Move record `rid` in time: claimed `claimed` seconds ago, expiring `expires` from now."""
    now = utcnow()
    values = {
        "created_at": now - timedelta(seconds=claimed),
        "expires_at": now + timedelta(seconds=expires),
    }
    async with app.state.engine.begin() as conn:
        done = await conn.execute(
            update(IdempotencyRecord).where(IdempotencyRecord.id == rid).values(**values)
        )
    assert done.rowcount == 1


async def _sweep_now(app: FastAPI, client: AsyncClient, user: User) -> None:
    """Have the next claim sweep (due now), and make one: another keyed write of `user`."""
    _store(app)._next_sweep = 0.0
    other = {**user.headers, KEY: f"sweep-{time.monotonic_ns()}"}
    data_of(await client.post("/api/v1/apps", json={"name": "Other"}, headers=other))


async def _apps(app: FastAPI, name: str) -> int:
    async with app.state.engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(App).where(App.name == name))
    return int(count or 0)


async def test_a_route_running_past_lease_and_retention_keeps_its_claim_through_a_sweep(
    settings: Settings,
) -> None:
    """A keyed workflow runs for three minutes (lease and retention of 60 s): its claim, renewed
    all along, was swept as dead by its claim time, and the retry ran the workflow again beside
    the first. The retry waits (409) and then gets the one answer."""
    own = settings.model_copy(update={**SHORT, "http_allow_hosts": ["127.0.0.1"]})
    async with slow_upstream() as upstream, app_client(own) as (app, client):
        upstream.gate = asyncio.Event()
        user = await register(client)
        app_id = await new_app(client, user.headers, "Long workflow")
        step = {"id": "up", "type": "httpRequest", "url": upstream.url, "timeout": 9}
        body = {"appId": app_id, "steps": [step]}
        headers = {**user.headers, KEY: "long-run-1"}

        first = asyncio.create_task(client.post("/api/v1/workflows", json=body, headers=headers))
        await upstream.wait_in_flight(1)
        # Three minutes into the route, its claim renewed a moment ago.
        await _age(app, _rid(user, "long-run-1"), claimed=180, expires=60)
        await _sweep_now(app, client, user)

        retry = asyncio.create_task(client.post("/api/v1/workflows", json=body, headers=headers))
        deadline = time.monotonic() + 10
        while not retry.done() and upstream.in_flight < 2:  # a second run would reach it
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        upstream.gate.set()
        assert_error(await retry, 409, "idempotency_key_in_use")
        answer = await first
        assert data_of(answer)["up"]["status"] == 200
        replay = await client.post("/api/v1/workflows", json=body, headers=headers)
        assert replay.headers.get("Idempotent-Replayed") == "1", replay.text
        assert replay.content == answer.content
        assert upstream.served == 1


async def _keyed_app(client: AsyncClient, user: User, name: str) -> Response:
    headers = {**user.headers, KEY: f"create-{name}"}
    return await client.post("/api/v1/apps", json={"name": name}, headers=headers)


async def test_an_answer_stored_late_by_a_long_route_is_replayed_for_its_whole_retention(
    settings: Settings,
) -> None:
    """A keyed request that ran 150 s (past its lease, renewed) stored its answer 30 s ago:
    within the retention, but claimed longer ago than lease + retention. The sweep deleted it,
    and the retry created a second app instead of getting the first one's answer."""
    async with app_client(settings.model_copy(update=SHORT)) as (app, client):
        user = await register(client)
        first = await _keyed_app(client, user, "Import")
        data_of(first)
        await _age(app, _rid(user, "create-Import"), claimed=180, expires=30)
        await _sweep_now(app, client, user)

        retry = await _keyed_app(client, user, "Import")
        assert retry.headers.get("Idempotent-Replayed") == "1", retry.text
        assert retry.content == first.content
        assert await _apps(app, "Import") == 1


async def test_the_sweep_still_deletes_records_past_their_expiry(settings: Settings) -> None:
    """What the sweep is for is unchanged: a record claimed longer ago than lease + retention
    whose lease or retention is over goes, and its key runs afresh."""
    async with app_client(settings.model_copy(update=SHORT)) as (app, client):
        user = await register(client)
        data_of(await _keyed_app(client, user, "Old"))
        rid = _rid(user, "create-Old")
        await _age(app, rid, claimed=180, expires=-60)
        await _sweep_now(app, client, user)
        query = select(IdempotencyRecord.id).where(IdempotencyRecord.id == rid)
        async with app.state.engine.connect() as conn:
            assert await conn.scalar(query) is None
        again = await _keyed_app(client, user, "Old")  # its key runs afresh
        assert again.headers.get("Idempotent-Replayed") is None
        assert await _apps(app, "Old") == 2
