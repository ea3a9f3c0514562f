"""Review of the background maintenance: the last-used flush, the idempotency sweep, the
in-process traffic counters' pruning, and what every process writes at shutdown — on the
embedded database and on PostgreSQL (two server processes where it matters)."""

import asyncio
import time
from datetime import timedelta

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.idempotency.claims import Claim
from apiforge.idempotency.models import IdempotencyRecord, IdempotencyToken
from apiforge.idempotency.store import SWEEP_BATCH, IdempotencyStore, shared_store
from apiforge.keys.lastused import LastUsedTracker
from apiforge.plans.hits import QuotaHitLog
from apiforge.plans.models import QuotaHit
from apiforge.tools.clock import utcnow
from apiforge.traffic import store as traffic_store
from apiforge.traffic.frequency import Rate
from apiforge.traffic.store import PRUNE_AT, MemoryTraffic
from tests.conftest import DATABASE_URL
from tests.e2e._keys import app_key, notes_app
from tests.e2e._workspaces import data_of
from tests.factories import register

ON_POSTGRES = DATABASE_URL.startswith("postgresql")


async def _waiting_on_locks(app: FastAPI, count: int) -> None:
    """Until `count` sessions of the test's database wait for a row lock (PostgreSQL)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(200):
        async with app.state.engine.connect() as conn:
            if (await conn.scalar(query)) >= count:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{count} sessions never waited for a lock")


# --- last-used times --------------------------------------------------------------------------


@pytest.mark.skipif(not ON_POSTGRES, reason="row locks of two nodes' flushes are PostgreSQL's")
async def test_two_nodes_flushing_the_same_keys_never_deadlock(
    app: FastAPI, client: AsyncClient
) -> None:
    """Two processes used the same two keys in opposite orders and flush at the same moment:
    both flushes write (one waits for the other), neither is aborted as a deadlock."""
    owner = await register(client)
    app_id = await notes_app(client, owner, visibility="public")
    consumer = await register(client)
    first, _ = await app_key(client, consumer, app_id)
    second, _ = await app_key(client, consumer, app_id)
    engine = app.state.engine
    node_a = LastUsedTracker(engine, interval=3600)
    node_b = LastUsedTracker(engine, interval=3600)
    try:
        for key_id in (first, second):
            node_a.touch(key_id)
        for key_id in (second, first):
            node_b.touch(key_id)
        async with engine.connect() as holder:
            # Hold both rows so the two flushes start together once they are let go.
            await holder.execute(
                text("SELECT id FROM api_keys WHERE id IN (:a, :b) FOR UPDATE"),
                {"a": first, "b": second},
            )
            flushes = asyncio.gather(node_a.flush(), node_b.flush())
            await _waiting_on_locks(app, 2)
            await holder.commit()
        assert list(await asyncio.wait_for(flushes, 30)) == [2, 2]
    finally:
        await node_a.close()
        await node_b.close()


# --- the idempotency sweep ----------------------------------------------------------------------


def _store(app: FastAPI) -> IdempotencyStore:
    """The process's store, as the gateway and the management API share it."""
    state = app.state
    return shared_store(state.gateway_state.extra, state.settings, state.redis)


async def _dead_records(conn: AsyncConnection, store: IdempotencyStore, count: int) -> None:
    """`count` records claimed longer ago than lease + retention (what the sweep deletes)."""
    long_ago = utcnow() - store.retention - store.lease - timedelta(minutes=1)
    rows = [
        {
            "id": f"{number:064x}",
            "fingerprint": "f",
            "owner": "o",
            "created_at": long_ago,
            "expires_at": long_ago + store.lease,
        }
        for number in range(count)
    ]
    await conn.execute(insert(IdempotencyRecord), rows)
    await conn.commit()


async def _records(conn: AsyncConnection) -> int:
    count = await conn.scalar(select(func.count()).select_from(IdempotencyRecord))
    await conn.commit()
    return int(count or 0)


async def test_a_backlog_of_dead_keys_is_swept_a_batch_a_second(app: FastAPI) -> None:
    """More dead keys than one batch (a busy gateway makes more than 500 keyed calls in five
    minutes): each sweep stays one batch, but the next comes a second later, not five minutes
    later, so the table stops growing."""
    store = _store(app)
    async with app.state.engine.connect() as conn:
        await _dead_records(conn, store, 2 * SWEEP_BATCH + 100)
        store._next_sweep = 0.0  # due now
        for number, left in enumerate((SWEEP_BATCH + 100, 100, 0)):
            if number:
                await asyncio.sleep(1.05)
            claim = await store.claim(conn, "f" * 63 + str(number), "f")
            assert isinstance(claim, Claim)
            assert await _records(conn) == left + number + 1  # the dead ones left + claims
        # Caught up: the next sweep is five minutes away again.
        assert store._next_sweep - time.monotonic() > 60


async def test_expired_tokens_are_swept_when_tokens_are_issued(
    app: FastAPI, client: AsyncClient
) -> None:
    """Tokens fetched and never spent expire; issuing tokens sweeps them, even where no call
    ever claims a key through the database (the embedded gateway claims keys in memory)."""
    user = await register(client)
    store = _store(app)
    async with app.state.engine.connect() as conn:
        expired = utcnow() - timedelta(seconds=1)
        rows = [{"id": f"{n:064x}", "principal": "key:x", "expires_at": expired} for n in range(3)]
        await conn.execute(insert(IdempotencyToken), rows)
        await conn.commit()
        store._next_sweep = 0.0  # due now
        data_of(await client.get("/api/v1/idempotency-tokens", headers=user.headers))
        ids = (await conn.execute(select(IdempotencyToken.id))).scalars().all()
        assert not set(ids) & {row["id"] for row in rows}


@pytest.mark.skipif(not ON_POSTGRES, reason="two sweeping processes contend on PostgreSQL")
async def test_a_sweep_skips_rows_another_process_holds(app: FastAPI) -> None:
    """Another process's claim transaction holds some dead rows (its sweep, or a takeover): this
    sweep deletes the others at once instead of waiting for that transaction to end."""
    store = _store(app)
    engine = app.state.engine
    async with engine.connect() as conn, engine.connect() as other:
        await _dead_records(conn, store, 10)
        held = [f"{number:064x}" for number in range(3)]
        await other.execute(
            select(IdempotencyRecord.id).where(IdempotencyRecord.id.in_(held)).with_for_update()
        )
        removed = await asyncio.wait_for(store.sweep(conn), 5)
        await conn.commit()
        assert removed == 7
        await other.rollback()
        assert await _records(conn) == 3


# --- in-process traffic counters ----------------------------------------------------------------


class _Clock:
    """Stands in for the `time` module of the traffic store: a clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.now


async def test_a_flood_of_client_ips_does_not_rescan_the_counters_on_every_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past `PRUNE_AT` live per-IP counters (a flood from many addresses, within two minutes),
    a call no longer scans them all for expired ones (milliseconds each, on the event loop every
    call shares); expired counters are still forgotten."""
    clock = _Clock()
    monkeypatch.setattr(traffic_store, "time", clock)
    store = MemoryTraffic()
    scans = 0
    prune = store._prune

    def counted(now_ms: float) -> None:
        nonlocal scans
        scans += 1
        prune(now_ms)

    monkeypatch.setattr(store, "_prune", counted)

    def ip_rate(ip: str) -> Rate:
        return Rate("ip", f"ip:app:echo:{ip}", 10, 60)

    for number in range(PRUNE_AT + 1000):
        assert await store.admit([ip_rate(f"a{number}")], [], "m") is None
    assert scans <= 1
    clock.now += 121  # both windows of every counter are over
    for number in range(PRUNE_AT):
        assert await store.admit([ip_rate(f"b{number}")], [], "m") is None
    assert scans <= 2
    assert len(store.windows) <= PRUNE_AT + 1  # the expired ones went


# --- quota hits at shutdown ---------------------------------------------------------------------


async def test_quota_hits_being_written_at_shutdown_are_not_lost(app: FastAPI) -> None:
    """The server stops while the writer's INSERT of last minute's refusals waits for the
    database: shutdown waits for that write instead of cancelling it half-way (which lost its
    rows, already taken out of memory)."""
    engine = app.state.engine
    hits = QuotaHitLog(lambda: engine, interval=0.01)
    async with engine.connect() as holder:
        if ON_POSTGRES:
            await holder.execute(text("LOCK TABLE quota_hits IN SHARE ROW EXCLUSIVE MODE"))
        else:  # SQLite: one writer at a time
            await holder.execute(text("DELETE FROM quota_hits WHERE id = 'none'"))
        hits.record(
            workspace_id="w" * 26,
            plan_id="p" * 26,
            quota="callsPerMonth",
            operation="invocations",
            limit=1,
            used=1,
            now=utcnow() - timedelta(minutes=1),  # its minute is over: the writer takes it
        )
        if ON_POSTGRES:
            await _waiting_on_locks(app, 1)
        else:
            await asyncio.sleep(0.3)
        assert len(hits) == 0  # taken by the writer, which waits for the database
        closing = asyncio.create_task(hits.close())
        await asyncio.sleep(0.2)
        await holder.rollback()
    await asyncio.wait_for(closing, 10)
    async with engine.connect() as conn:
        assert await conn.scalar(select(func.count()).select_from(QuotaHit)) == 1
