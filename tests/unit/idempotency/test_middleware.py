"""The management middleware's claim upkeep: renewals that fail for a moment are retried before
the lease ends, and on the embedded database the store's writes check out no pooled connection
(it writes through its own)."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncConnection
from structlog.testing import capture_logs

from apiforge.idempotency.claims import Claim
from apiforge.idempotency.middleware import _keep_claimed
from apiforge.idempotency.store import IdempotencyStore, shared_store
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register

KEY = "Idempotency-Key"


class _Engine:
    """A stand-in for the pool: hands out a placeholder connection and counts checkouts."""

    def __init__(self) -> None:
        self.checkouts = 0

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Any]:
        self.checkouts += 1
        yield object()


class _FlakyStore:
    """A store whose first `failures` renewals raise (the database out of reach for a moment)."""

    def __init__(self, lease_seconds: float, failures: int) -> None:
        self.lease = timedelta(seconds=lease_seconds)
        self.own_db = None
        self.failures = failures
        self.tries: list[float] = []
        self.renewed: list[float] = []
        self.twice = asyncio.Event()

    async def renew(self, conn: AsyncConnection | None, claim: Claim) -> bool:
        now = time.monotonic()
        self.tries.append(now)
        if len(self.tries) <= self.failures:
            raise OSError("database unreachable")
        self.renewed.append(now)
        if len(self.renewed) == 2:
            self.twice.set()
        return True


async def test_failed_renewals_are_retried_before_the_lease_ends() -> None:
    """Three renewals fail in a row: the claim is renewed well within its lease (it used to
    wait a third of the lease after each failure, and renew only once the lease had ended —
    a retry could take the key over then and run the request a second time), without
    busy-looping, and once renewed the period is a third of the lease again."""
    lease = 3.0
    store = _FlakyStore(lease, failures=3)
    state: Any = type("State", (), {"engine": _Engine()})()
    done = asyncio.Event()
    started = time.monotonic()
    with capture_logs() as logs:
        keeper = asyncio.create_task(_keep_claimed(state, store, Claim("r", "o"), done))  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(store.twice.wait(), 3 * lease)
        finally:
            done.set()
            await keeper
    assert [e["event"] for e in logs] == ["idempotency_renew_failed"] * 3
    assert store.renewed[0] - started < 0.8 * lease, [t - started for t in store.tries]
    gaps = [b - a for a, b in zip(store.tries, store.tries[1:], strict=False)]
    assert min(gaps) >= lease / 12 * 0.9  # backing off, never a busy loop
    assert len(store.renewed) == 2
    assert store.renewed[1] - store.renewed[0] >= lease / 3 * 0.9


async def test_a_renewal_that_fails_every_time_keeps_trying_at_a_bounded_pace() -> None:
    """The database stays out of reach: renewals go on (any one may get through before the
    lease ends), a twelfth of the lease apart at most once backed off, never faster than the
    first retry, and stop once the route ends."""
    lease = 2.4
    store = _FlakyStore(lease, failures=1000)
    state: Any = type("State", (), {"engine": _Engine()})()
    done = asyncio.Event()
    with capture_logs():
        keeper = asyncio.create_task(_keep_claimed(state, store, Claim("r", "o"), done))  # type: ignore[arg-type]
        await asyncio.sleep(lease)
        done.set()
        await keeper
    tried = len(store.tries)
    # First at a third of the lease, then every twelfth: eight or nine tries in a lease.
    assert 5 <= tried <= 10, tried
    gaps = [b - a for a, b in zip(store.tries, store.tries[1:], strict=False)]
    assert min(gaps) >= lease / 12 * 0.9
    await asyncio.sleep(lease / 6)
    assert len(store.tries) == tried  # none after the route ended


class _CountingEngine:
    """The app's engine as the middleware sees it, counting the connections checked out."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.checkouts = 0

    def connect(self) -> Any:
        self.checkouts += 1
        return self.engine.connect()

    def __getattr__(self, name: str) -> Any:  # the rest (shutdown disposes of it) as it is
        return getattr(self.engine, name)


def _counting(app: FastAPI) -> _CountingEngine:
    counting = _CountingEngine(app.state.engine)
    app.state.engine = counting
    return counting


def _store(app: FastAPI) -> IdempotencyStore:
    state = app.state
    return shared_store(state.gateway_state.extra, state.settings, state.redis)


async def test_a_keyed_write_checks_out_a_pooled_connection_only_where_the_store_uses_it(
    app: FastAPI, client: AsyncClient
) -> None:
    """On the embedded database the store stores an answer and releases a claim through its own
    connection: the middleware checked out a pooled connection for each all the same (unused,
    and waiting behind the routes when the pool is busy). Only the claim's is needed there
    (it may fall back to the portable path, and spends tokens); on PostgreSQL each is used."""
    user = await register(client)
    counting = _counting(app)
    pooled = 1 if _store(app).own_db is not None else 2

    stored = await client.post(
        "/api/v1/apps", json={"name": "Shop"}, headers={**user.headers, KEY: "stored"}
    )
    data_of(stored)
    assert counting.checkouts == pooled  # the claim, and on PostgreSQL the completion

    counting.checkouts = 0
    failed = await client.post("/api/v1/apps", json={}, headers={**user.headers, KEY: "failed"})
    assert_error(failed, 400, "missing_parameters")
    assert counting.checkouts == pooled  # the claim, and on PostgreSQL the release
    # Released: the key runs afresh.
    again = await client.post(
        "/api/v1/apps", json={"name": "Other"}, headers={**user.headers, KEY: "failed"}
    )
    data_of(again)
    assert "Idempotent-Replayed" not in again.headers


async def test_renewals_on_the_embedded_database_check_out_no_pooled_connection(
    app: FastAPI, client: AsyncClient
) -> None:
    """A renewal on the embedded database goes through the store's own connection; it checked
    out a pooled one it never used. (On PostgreSQL the renewal uses the pooled connection.)"""
    user = await register(client)
    data_of(
        await client.post(
            "/api/v1/apps", json={"name": "Shop"}, headers={**user.headers, KEY: "renewed"}
        )
    )
    store = _store(app)
    counting = _counting(app)
    claim = await _claim_again(app, store)
    store.lease = timedelta(seconds=0.3)  # a renewal every 0.1 s
    renewals: list[bool] = []
    twice = asyncio.Event()
    renew = store.renew

    async def counted(conn: AsyncConnection | None, claim: Claim) -> bool:
        renewals.append(await renew(conn, claim))
        if len(renewals) == 2:
            twice.set()
        return renewals[-1]

    store.renew = counted  # type: ignore[method-assign]
    done = asyncio.Event()
    keeper = asyncio.create_task(_keep_claimed(app.state, store, claim, done))
    await asyncio.wait_for(twice.wait(), 10)
    done.set()
    await keeper
    assert all(renewals)
    if store.own_db is not None:
        assert counting.checkouts == 0
    else:
        assert counting.checkouts == len(renewals)


async def _claim_again(app: FastAPI, store: IdempotencyStore) -> Claim:
    """A fresh unfinished claim of some key, as the middleware holds while its route runs."""
    async with app.state.engine.engine.connect() as conn:
        claim = await store.claim(conn, "5a" * 32, "fingerprint")
    assert isinstance(claim, Claim)
    return claim
