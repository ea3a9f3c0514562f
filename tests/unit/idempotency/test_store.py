"""The idempotency store against the test database (SQLite, or PostgreSQL + Redis): claims,
completions, takeovers of dead claims, releases, sweeps and one-time tokens."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apiforge.core.db import make_engine
from apiforge.core.errors import UnavailableError
from apiforge.core.settings import Settings
from apiforge.core.shared import make_redis
from apiforge.idempotency.claims import Claim, KeyInUseError, KeyMismatchError, StoredResponse
from apiforge.idempotency.keys import token_id
from apiforge.idempotency.models import IdempotencyRecord, IdempotencyToken
from apiforge.idempotency.sqlite_db import OwnConnection
from apiforge.idempotency.store import IdempotencyStore
from apiforge.idempotency.tokens import DuplicateRequestError
from apiforge.tools.clock import utcnow

RID = "7e" * 32  # record ids are SHA-256 hex digests
ANSWER = StoredResponse(200, {"content-type": "application/json"}, b'{"code":200}')


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    db = make_engine(settings.resolved_database_url)
    yield db
    await db.dispose()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[IdempotencyStore]:
    redis = make_redis(settings)
    store = IdempotencyStore(settings, redis)
    yield store
    await store.close()
    if redis is not None:
        await redis.aclose()


@asynccontextmanager
async def _closing(store: IdempotencyStore) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await store.close()


async def _expire(conn: AsyncConnection, rid: str = RID) -> None:
    await conn.execute(
        update(IdempotencyRecord)
        .where(IdempotencyRecord.id == rid)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    await conn.commit()


async def test_claim_complete_replay(engine: AsyncEngine, store: IdempotencyStore) -> None:
    async with engine.connect() as conn:
        claim = await store.claim(conn, RID, "f1")
        assert isinstance(claim, Claim)
        with pytest.raises(KeyInUseError):
            await store.claim(conn, RID, "f1")
        with pytest.raises(KeyMismatchError):
            await store.claim(conn, RID, "f2")
        await store.complete(conn, claim, ANSWER)
        await conn.commit()
        assert await store.claim(conn, RID, "f1") == ANSWER
        with pytest.raises(KeyMismatchError):
            await store.claim(conn, RID, "f2")
        # A completed record is never released.
        await store.release(conn, claim)
        assert await store.claim(conn, RID, "f1") == ANSWER


async def test_a_completion_rolled_back_leaves_the_claim_unfinished(
    engine: AsyncEngine, store: IdempotencyStore
) -> None:
    async with engine.connect() as conn:
        claim = await store.claim(conn, RID, "f1")
        assert isinstance(claim, Claim)
        await store.complete(conn, claim, ANSWER)
        await conn.rollback()  # the call failed after storing: nothing of it stays
        with pytest.raises(KeyInUseError):
            await store.claim(conn, RID, "f1")
        await store.release(conn, claim)
        assert isinstance(await store.claim(conn, RID, "f1"), Claim)


async def test_a_dead_claim_is_taken_over_and_its_owner_cannot_complete(
    engine: AsyncEngine, store: IdempotencyStore
) -> None:
    async with engine.connect() as conn:
        stale = await store.claim(conn, RID, "f1")
        assert isinstance(stale, Claim)
        await _expire(conn)
        fresh = await store.claim(conn, RID, "f2")  # a dead claim binds no payload
        assert isinstance(fresh, Claim)
        assert fresh.owner != stale.owner
        with pytest.raises(KeyInUseError):
            await store.complete(conn, stale, ANSWER)
        await conn.rollback()
        await store.release(conn, stale)  # not the owner any more: no effect
        with pytest.raises(KeyInUseError):
            await store.claim(conn, RID, "f2")
        await store.complete(conn, fresh, ANSWER)
        await conn.commit()
        assert await store.claim(conn, RID, "f2") == ANSWER


async def test_an_expired_response_is_forgotten(
    engine: AsyncEngine, store: IdempotencyStore
) -> None:
    async with engine.connect() as conn:
        claim = await store.claim(conn, RID, "f1")
        assert isinstance(claim, Claim)
        await store.complete(conn, claim, ANSWER)
        await conn.commit()
        await _expire(conn)
        assert isinstance(await store.claim(conn, RID, "other payload"), Claim)


async def test_sweep_deletes_only_dead_rows(engine: AsyncEngine, store: IdempotencyStore) -> None:
    async with engine.connect() as conn:
        for rid in ("a" * 64, "b" * 64):
            assert isinstance(await store.claim(conn, rid, "f"), Claim)
        await _expire(conn, "a" * 64)
        assert await store.sweep(conn) == 0  # dead, but taken over when its key comes back
        long_ago = utcnow() - store.retention - store.lease - timedelta(seconds=1)
        await conn.execute(
            update(IdempotencyRecord)
            .where(IdempotencyRecord.id == "a" * 64)
            .values(created_at=long_ago)
        )
        assert await store.sweep(conn) == 1
        await conn.commit()
        left = await conn.scalar(select(func.count()).select_from(IdempotencyRecord))
        assert left == 1


async def test_tokens_are_spent_once_by_their_owner(
    engine: AsyncEngine, store: IdempotencyStore
) -> None:
    async with engine.connect() as conn:
        token, expires = await store.tokens.issue(conn, "key:one")
        await conn.commit()
        assert expires > utcnow()
        digest = token_id(token)
        assert digest is not None
        with pytest.raises(DuplicateRequestError):
            await store.tokens.consume(conn, digest, "key:two")  # someone else's
        await store.tokens.consume(conn, digest, "key:one")
        with pytest.raises(DuplicateRequestError):
            await store.tokens.consume(conn, digest, "key:one")


async def test_expired_tokens_are_refused(engine: AsyncEngine, settings: Settings) -> None:
    store = IdempotencyStore(settings)  # the database path, whatever the suite's backend
    async with engine.connect() as conn, _closing(store):
        token, _ = await store.tokens.issue(conn, "key:one")
        await conn.execute(
            update(IdempotencyToken).values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await conn.commit()
        digest = token_id(token)
        assert digest is not None
        with pytest.raises(DuplicateRequestError):
            await store.tokens.consume(conn, digest, "key:one")


async def test_a_claim_sweeps_when_due(engine: AsyncEngine, store: IdempotencyStore) -> None:
    async with engine.connect() as conn:
        assert isinstance(await store.claim(conn, "a" * 64, "f"), Claim)
        long_ago = utcnow() - store.retention - store.lease - timedelta(seconds=1)
        # Claimed long ago and never renewed: its lease is long over too.
        dead = {"created_at": long_ago, "expires_at": long_ago + store.lease}
        await conn.execute(update(IdempotencyRecord).values(**dead))
        await conn.commit()
        store._next_sweep = 0.0  # due now
        assert isinstance(await store.claim(conn, "b" * 64, "f"), Claim)
        left = (await conn.execute(select(IdempotencyRecord.id))).scalars().all()
        assert left == ["b" * 64]
        assert store._next_sweep > 0


async def test_a_closed_own_connection_refuses_to_reopen(tmp_path: Path) -> None:
    """Work reaching the store's connection after shutdown gets a 503 and opens nothing: a
    connection opened then would never be closed."""
    own_db = OwnConnection(str(tmp_path / "idem.db"))
    await own_db.get()
    await own_db.close()
    with pytest.raises(UnavailableError):
        await own_db.get()
    assert own_db._db is None
