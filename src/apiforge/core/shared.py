"""Shared-state backends: Redis when configured, in-process otherwise (limits storage)."""

from limits.aio.storage import MemoryStorage, Storage
from limits.storage import storage_from_string
from redis.asyncio import Redis

from apiforge.core.settings import Settings


def make_redis(settings: Settings) -> "Redis | None":
    if not settings.redis_url:
        return None
    return Redis.from_url(settings.redis_url, decode_responses=False)


def make_limits_storage(settings: Settings) -> Storage:
    """Sliding-window counters for `limits`: Redis across nodes, memory for one process."""
    if not settings.redis_url:
        return MemoryStorage()
    url = settings.redis_url.replace("redis://", "async+redis://", 1)
    # redis-py (already our Redis client) rather than coredis, so one client library is in play.
    storage = storage_from_string(
        url, key_prefix=f"{settings.redis_prefix}limits", implementation="redispy"
    )
    assert isinstance(storage, Storage)  # async+ scheme always yields an async storage
    return storage


async def close_limits_storage(storage: Storage) -> None:
    """Close the Redis connections a Redis-backed `limits` storage opened (memory: nothing)."""
    bridge = getattr(storage, "bridge", None)
    client = getattr(bridge, "storage", None)
    if client is not None and hasattr(client, "aclose"):
        await client.aclose()
