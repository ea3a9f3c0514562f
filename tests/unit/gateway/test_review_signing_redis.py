"""Signed-call nonces in Redis: one key cannot grow Redis without bound within a nonce's
lifetime (429 `too_many_nonces`, as in process), and everything stored expires."""

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from apiforge.core.errors import RateLimitedError
from apiforge.gateway.signing import NONCE_TTL_SECONDS, RedisNonceStore
from apiforge.http.metrics import LIMIT_REJECTIONS
from tests.e2e._traffic import redis_client


@pytest.fixture
async def client() -> AsyncIterator[Redis]:
    async with redis_client() as redis:
        yield redis


async def test_a_key_past_its_share_of_redis_nonces_is_refused(client: Redis) -> None:
    store = RedisNonceStore(client, "p:", per_key=5)
    for index in range(5):
        assert await store.claim(f"flood:nonce-{index}", NONCE_TTL_SECONDS)
    before = LIMIT_REJECTIONS.labels("signing_nonces", "key")._value.get()
    with pytest.raises(RateLimitedError) as caught:
        await store.claim("flood:nonce-5", NONCE_TTL_SECONDS)
    assert caught.value.status == 429
    assert caught.value.reason == "too_many_nonces"
    assert 1 <= int(caught.value.headers["Retry-After"]) <= NONCE_TTL_SECONDS * 2
    assert LIMIT_REJECTIONS.labels("signing_nonces", "key")._value.get() == before + 1
    assert await store.claim("flood:nonce-0", NONCE_TTL_SECONDS) is False  # a replay, still
    assert await store.claim("other:nonce-5", NONCE_TTL_SECONDS)  # another key's share
    assert await client.exists("p:nonce:flood:nonce-5") == 0  # the refused one kept nothing


async def test_every_nonce_key_expires(client: Redis) -> None:
    store = RedisNonceStore(client, "p:", per_key=3)
    for index in range(3):
        assert await store.claim(f"k:nonce-{index}", NONCE_TTL_SECONDS)
    with pytest.raises(RateLimitedError):
        await store.claim("k:nonce-3", NONCE_TTL_SECONDS)
    keys = [key async for key in client.scan_iter(match="p:*")]
    assert len(keys) == 4  # three nonces and the key's counts
    for key in keys:
        assert 0 < await client.ttl(key) <= 2 * NONCE_TTL_SECONDS
