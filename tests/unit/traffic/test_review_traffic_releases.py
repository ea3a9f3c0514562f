"""Releases that could not reach Redis: kept, and sent again once the failure pause is over,
not only when this server's next limited call happens to carry them."""

import asyncio
import time
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from apiforge.core.settings import Settings
from apiforge.core.shared import make_redis
from apiforge.traffic.concurrency import Slot, new_member
from apiforge.traffic.failure import RETRY_PAUSE_SECONDS
from apiforge.traffic.store import RedisTraffic
from tests.e2e._traffic import redis_server


@pytest.mark.parametrize("transport", ["line", "redis-py"])
async def test_a_release_that_met_a_redis_blip_goes_out_without_another_call(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call ends while Redis is briefly unreachable, and no limited call follows on this
    server (its traffic went elsewhere): the place used to stay taken in Redis for the whole
    lease (60 s), refusing every other server's calls on that counter."""
    async with redis_server() as server:
        client = make_redis(Settings(redis_url=server.url))
        assert client is not None
        store = RedisTraffic(client, "t:", lease_seconds=60)
        if transport == "redis-py":
            assert store.line is not None
            await store.line.close()
            store.line = None
        try:
            slot = Slot("app", "blip", 1)
            member = new_member()
            assert await store.admit([], [slot], member) is None
            failures = 0

            def blip(real: Any) -> Any:
                async def failing(*args: Any, **kwargs: Any) -> Any:
                    nonlocal failures
                    if failures == 0:
                        failures += 1
                        raise RedisConnectionError("Connection to Redis lost: blip")
                    return await real(*args, **kwargs)

                return failing

            if store.line is not None:
                monkeypatch.setattr(store.line, "run_script", blip(store.line.run_script))
            else:
                real_pipeline = client.pipeline

                def pipeline(*args: Any, **kwargs: Any) -> Any:
                    pipe = real_pipeline(*args, **kwargs)
                    monkeypatch.setattr(pipe, "execute", blip(pipe.execute))
                    return pipe

                monkeypatch.setattr(client, "pipeline", pipeline)
            await store.release([slot], member)
            deadline = time.monotonic() + 1
            while not failures:  # the release went out alone and met the blip
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
            assert store.pending  # kept, not lost

            deadline = time.monotonic() + RETRY_PAUSE_SECONDS + 2
            while await store.in_flight("blip"):
                assert time.monotonic() < deadline, "the release waits for a call to carry it"
                await asyncio.sleep(0.05)
            assert store.pending == []
        finally:
            await store.close()
            await client.aclose()


async def test_releases_are_not_retried_after_close(monkeypatch: pytest.MonkeyPatch) -> None:
    """At shutdown a release Redis cannot take is left to its lease: no retry keeps running."""
    async with redis_server() as server:
        client = make_redis(Settings(redis_url=server.url))
        assert client is not None
        store = RedisTraffic(client, "t:", lease_seconds=60)
        slot = Slot("app", "closing", 1)
        member = new_member()
        assert await store.admit([], [slot], member) is None
        await server.stop()
        await store.release([slot], member)
        await store.close()
        assert store.pending  # unsent
        flushes = 0
        real = store.flush

        async def counted() -> None:
            nonlocal flushes
            flushes += 1
            await real()

        monkeypatch.setattr(store, "flush", counted)
        await asyncio.sleep(RETRY_PAUSE_SECONDS + 0.5)
        assert flushes == 0
        await client.aclose()
