"""Shared-state backends: Redis when configured, in-process otherwise (limits storage).

Both Redis clients use a blocking pool: under a burst of calls a command waits (briefly) for a
free connection instead of failing with "too many connections", which traffic control would
otherwise have to treat as Redis being down. Socket timeouts bound how long a hung Redis can
hold a call before its failure policy takes over.
"""

from limits.aio.storage import MemoryStorage, Storage
from limits.storage import storage_from_string
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from apiforge.core.settings import Settings

POOL_SIZE = 200  # connections per process and client
POOL_WAIT_SECONDS = 5.0
SOCKET_TIMEOUT_SECONDS = 1.0  # Redis answers in well under a millisecond


def _pool(url: str) -> BlockingConnectionPool:
    return BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=POOL_WAIT_SECONDS,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
        # One immediate retry on a fresh socket: after Redis restarts, every pooled connection
        # is dead, and without it each would fail one command as if Redis were still down.
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[RedisConnectionError],
    )


def make_redis(settings: Settings) -> "Redis | None":
    if not settings.redis_url:
        return None
    return Redis.from_pool(_pool(settings.redis_url))


def make_limits_storage(settings: Settings) -> Storage:
    """Sliding-window counters for `limits`: Redis across nodes, memory for one process."""
    if not settings.redis_url:
        return MemoryStorage()
    url = settings.redis_url.replace("redis://", "async+redis://", 1)
    # redis-py (already our Redis client) rather than coredis, so one client library is in play.
    storage = storage_from_string(
        url,
        key_prefix=f"{settings.redis_prefix}limits",
        implementation="redispy",
        # Documented by limits, though its stubs type extra options as scalars only.
        connection_pool=_pool(settings.redis_url),  # type: ignore[arg-type]
    )
    assert isinstance(storage, Storage)  # async+ scheme always yields an async storage
    return storage


async def close_limits_storage(storage: Storage) -> None:
    """Close the Redis connections a Redis-backed `limits` storage opened (memory: nothing)."""
    bridge = getattr(storage, "bridge", None)
    client = getattr(bridge, "storage", None)
    if client is not None and hasattr(client, "aclose"):
        await client.aclose()
        await client.connection_pool.disconnect()  # a pool passed in is not closed with it
