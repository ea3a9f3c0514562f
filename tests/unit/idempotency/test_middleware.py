"""The management middleware's claim upkeep: renewals that fail for a moment are retried before
the lease ends, and on the embedded database the store's writes check out no pooled connection
(it writes through its own)."""

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event, select, text
from sqlalchemy.ext.asyncio import AsyncConnection
from structlog.testing import capture_logs

from apiforge.idempotency.claims import Claim
from apiforge.idempotency.middleware import _admitted, _keep_claimed
from apiforge.idempotency.store import RECORDS, IdempotencyStore, shared_store
from tests.conftest import DATABASE_URL
from tests.e2e._asgi import pool_checkouts
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


class _HangingStore:
    """A store whose first renewal never returns (a connect to a server gone quiet)."""

    def __init__(self, lease_seconds: float) -> None:
        self.lease = timedelta(seconds=lease_seconds)
        self.own_db = None
        self.tries: list[float] = []
        self.renewed = asyncio.Event()

    async def renew(self, conn: AsyncConnection | None, claim: Claim) -> bool:
        self.tries.append(time.monotonic())
        if len(self.tries) == 1:
            await asyncio.Event().wait()
        self.renewed.set()
        return True


async def test_a_hung_renewal_is_given_up_in_time_for_the_next_try() -> None:
    """A renewal had no time limit: one that hung kept the next from being tried, and the claim
    lapsed under the route still running. Each try on a pooled connection now gets a twelfth
    of the lease, then the next one follows as after a failure."""
    lease = 2.4
    store = _HangingStore(lease)
    state: Any = type("State", (), {"engine": _Engine()})()
    done = asyncio.Event()
    started = time.monotonic()
    with capture_logs() as logs:
        keeper = asyncio.create_task(_keep_claimed(state, store, Claim("r", "o"), done))  # type: ignore[arg-type]
        try:
            await asyncio.wait_for(store.renewed.wait(), lease)
        finally:
            done.set()
            keeper.cancel()  # before the fix, still waiting on the hung renewal
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
    assert len(store.tries) == 2
    assert store.tries[1] - started < 0.6 * lease
    assert [e["event"] for e in logs] == ["idempotency_renew_failed"]


@pytest.mark.skipif(not DATABASE_URL, reason="a renewal uses a pooled connection on PostgreSQL")
async def test_a_renewal_cut_off_midway_leaves_no_broken_connection_in_the_pool(
    app: FastAPI, client: AsyncClient
) -> None:
    """The statement under way when the try's time runs out: SQLAlchemy invalidates the
    connection (cancelled midway, its state is unknown) instead of checking it in, so the pool
    hands out only working connections afterwards, and the next try renews the claim."""
    await register(client)
    store = _store(app)
    _counting(app)  # as `_claim_again` expects
    claim = await _claim_again(app, store)
    store.lease = timedelta(seconds=1.2)  # tries at 0.4 s, each cut off after 0.1 s
    renew = store.renew
    renewed = asyncio.Event()
    invalidated: list[int] = []
    pool = app.state.engine.sync_engine.pool

    def counted(*_args: object) -> None:
        invalidated.append(1)

    async def slow_once(conn: AsyncConnection | None, claim: Claim) -> bool:
        assert conn is not None
        if not invalidated:
            await conn.execute(text("SELECT pg_sleep(30)"))
        ok = await renew(conn, claim)
        renewed.set()
        return ok

    store.renew = slow_once  # type: ignore[method-assign]
    event.listen(pool, "invalidate", counted)
    try:
        done = asyncio.Event()
        keeper = asyncio.create_task(_keep_claimed(app.state, store, claim, done))
        await asyncio.wait_for(renewed.wait(), 5)
        done.set()
        await keeper
    finally:
        event.remove(pool, "invalidate", counted)
    assert invalidated == [1]
    assert pool.checkedout() == 0
    for _ in range(pool.size() + 1):  # every pooled connection works
        async with app.state.engine.connect() as conn:
            assert await conn.scalar(text("SELECT 1")) == 1


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
    """On the embedded database the store claims, stores an answer and releases a claim through
    its own connection: the middleware checked out a pooled connection for each all the same
    (unused, and waiting behind the routes when the pool is busy). The claim's connection is
    lazy there (`test_a_claim_on_the_embedded_database_checks_out_no_pooled_connection`); on
    PostgreSQL each is used."""
    user = await register(client)
    counting = _counting(app)
    pooled = 0 if _store(app).own_db is not None else 2

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
    checked_out: list[int] = []  # checkouts when the second renewal returned

    async def counted(conn: AsyncConnection | None, claim: Claim) -> bool:
        renewals.append(await renew(conn, claim))
        if len(renewals) == 2:
            # Counted here, not after the keeper stops: under load a third try may check out
            # its connection before `done` is seen, and be stopped before it renews.
            checked_out.append(counting.checkouts)
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
        assert checked_out == [2]


async def _token(client: AsyncClient, user: Any) -> str:
    response = await client.get("/api/v1/idempotency-tokens", headers=user.headers)
    token: str = data_of(response)["token"]
    return token


async def test_a_claim_on_the_embedded_database_checks_out_no_pooled_connection(
    app: FastAPI, client: AsyncClient
) -> None:
    """The claim and the token it spends go through the store's own connection there: the
    middleware checked out a pooled one for them all the same. On PostgreSQL they use it."""
    user = await register(client)
    token = await _token(client, user)
    store = _store(app)
    with pool_checkouts(app) as seen:
        principal = f"acct:{user.account_id}"
        claim = await _admitted(app.state, store, "6b" * 32, "print", token, principal)
    assert isinstance(claim, Claim)
    assert len(seen) == (0 if store.own_db is not None else 1)
    # The token was spent: a second use of it is refused.
    assert_error(
        await client.post(
            "/api/v1/apps",
            json={"name": "Twice"},
            headers={**user.headers, "X-Idempotency-Token": token},
        ),
        409,
        "duplicate_request",
    )


async def test_a_claim_that_falls_back_to_the_portable_path_still_claims(
    app: FastAPI, client: AsyncClient
) -> None:
    """Should the store's own connection be inside a transaction, the claim is made on the
    portable path: on the embedded database the lazy connection checks one out just then."""
    store = _store(app)
    if store.own_db is None:
        return  # PostgreSQL: the portable path is the only one (the test above)

    async def busy(*_args: object) -> None:
        return None  # what `_claim_sqlite` answers when its connection is in a transaction

    store._claim_sqlite = busy  # type: ignore[method-assign,assignment]
    with pool_checkouts(app) as seen:
        claim = await _admitted(app.state, store, "7c" * 32, "print", None, "principal")
    assert isinstance(claim, Claim)
    assert len(seen) == 1
    async with app.state.engine.connect() as conn:
        owner = await conn.scalar(select(RECORDS.c.owner).where(RECORDS.c.id == "7c" * 32))
    assert owner == claim.owner


async def _claim_again(app: FastAPI, store: IdempotencyStore) -> Claim:
    """A fresh unfinished claim of some key, as the middleware holds while its route runs."""
    async with app.state.engine.engine.connect() as conn:
        claim = await store.claim(conn, "5a" * 32, "fingerprint")
    assert isinstance(claim, Claim)
    return claim
