"""`LastUsedTracker`: uses recorded in memory, written in batches, never moved backwards."""

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, update

from apiforge.core.db import make_engine
from apiforge.keys.lastused import LastUsedTracker
from apiforge.keys.models import ApiKey
from tests.e2e._keys import app_key, counting, create_key, notes_app
from tests.factories import register


async def _key_ids(client: AsyncClient, n: int) -> list[str]:
    owner = await register(client)
    app_id = await notes_app(client, owner, publish=False)
    first, _ = await app_key(client, owner, app_id)
    others = [
        (await create_key(client, owner.headers, type="app", appId=app_id))[0] for _ in range(n - 1)
    ]
    return [first, *others]


async def _stored(app: FastAPI, key_id: str) -> datetime | None:
    async with app.state.engine.connect() as conn:
        value: datetime | None = await conn.scalar(
            select(ApiKey.last_used_at).where(ApiKey.id == key_id)
        )
        return value


async def test_uses_are_kept_in_memory_and_written_in_one_batch(
    app: FastAPI, client: AsyncClient
) -> None:
    ids = await _key_ids(client, 3)
    tracker = LastUsedTracker(app.state.engine, interval=3600)
    with counting(app, "UPDATE api_keys") as seen:
        for _ in range(50):
            for key_id in ids:
                tracker.touch(key_id)
    assert seen == []
    pending = tracker.pending(ids[0])
    assert pending is not None
    assert abs(pending - datetime.now(UTC)) < timedelta(seconds=2)
    assert await _stored(app, ids[0]) is None
    with counting(app, "UPDATE api_keys") as seen:
        assert await tracker.flush() == 3
    assert len(seen) == 1  # one executemany for the whole batch
    for key_id in ids:
        assert await _stored(app, key_id) == pending.replace(microsecond=0)
    assert tracker.pending(ids[0]) is None
    assert await tracker.flush() == 0
    await tracker.close()


async def test_a_flush_never_moves_a_time_backwards(app: FastAPI, client: AsyncClient) -> None:
    [key_id] = await _key_ids(client, 1)
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    async with app.state.engine.begin() as conn:  # another node saw a later use
        await conn.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=later))
    tracker = LastUsedTracker(app.state.engine)
    tracker.touch(key_id)
    await tracker.flush()
    assert await _stored(app, key_id) == later
    await tracker.close()


async def test_the_background_task_flushes_and_close_writes_the_rest(
    app: FastAPI, client: AsyncClient
) -> None:
    first, second = await _key_ids(client, 2)
    tracker = LastUsedTracker(app.state.engine, interval=0.05)
    tracker.touch(first)
    for _ in range(100):
        if await _stored(app, first) is not None:
            break
        await asyncio.sleep(0.02)
    assert await _stored(app, first) is not None
    tracker.interval = 3600  # the next round will not come during this test
    await asyncio.sleep(0.06)
    tracker.touch(second)
    await tracker.close()
    assert await _stored(app, second) is not None
    tracker.touch(second)  # after close: recorded, no task started
    assert tracker._task is None


async def test_a_failed_flush_keeps_the_times(tmp_path: Path) -> None:
    broken = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")  # no api_keys table
    tracker = LastUsedTracker(broken, interval=3600)
    tracker.touch("k1")
    when = tracker.pending("k1")
    assert await tracker.flush() == 0
    assert tracker.pending("k1") == when
    await tracker.close()
    await broken.dispose()
