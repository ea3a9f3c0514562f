"""Anti-duplicate tokens (spec 003 §4.6.3): issued one at a time to a caller, spent once.

They live in Redis when it is configured (one atomic compare-and-delete) and in the database
otherwise (one conditional DELETE); on the embedded database the DELETE goes through the
idempotency store's own connection, committed in the same hop.
"""

import hashlib
import secrets
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Table, delete, insert
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.db import sqlite_stamp
from apiforge.core.errors import ConflictError, UnavailableError
from apiforge.http.metrics import LIMIT_DEGRADED
from apiforge.idempotency.models import IdempotencyToken
from apiforge.idempotency.sqlite_db import OwnConnection, rowcount, run_committed
from apiforge.tools.clock import utcnow

log = structlog.get_logger(__name__)

TOKENS = cast(Table, IdempotencyToken.__table__)

# Compare-and-delete: a token is spent only by the caller it was issued to.
_CONSUME_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
_SQLITE_CONSUME = "DELETE FROM idempotency_tokens WHERE id = ? AND principal = ? AND expires_at > ?"


class DuplicateRequestError(ConflictError):
    reason = "duplicate_request"
    message = "This anti-duplicate token was already used (or never issued to you)"


class TokenStore:
    def __init__(
        self, ttl_seconds: int, redis: Any, prefix: str, own_db: OwnConnection | None
    ) -> None:
        self.ttl = ttl_seconds
        self.redis = redis
        self.prefix = f"{prefix}idem-token:"
        self.own_db = own_db
        self._consume = redis.register_script(_CONSUME_LUA) if redis is not None else None

    async def issue(self, conn: AsyncConnection, principal: str) -> tuple[str, datetime]:
        """A new one-time token bound to `principal` (the caller commits the database row)."""
        token = secrets.token_urlsafe(32)
        digest = hashlib.sha256(token.encode()).hexdigest()
        expires = utcnow() + timedelta(seconds=self.ttl)
        if self.redis is not None:
            try:
                await self.redis.set(self.prefix + digest, principal, ex=self.ttl)
            except Exception as exc:
                raise _redis_down("issue") from exc
        else:
            await conn.execute(
                insert(TOKENS).values(id=digest, principal=principal, expires_at=expires)
            )
        return token, expires

    async def consume(self, conn: AsyncConnection, digest: str, principal: str) -> None:
        """Spend a token atomically (one compare-and-delete); 409 `duplicate_request` when it was
        spent already, expired, or issued to someone else. Commits on the database."""
        if self._consume is not None:
            try:
                spent = await self._consume(keys=[self.prefix + digest], args=[principal])
            except Exception as exc:
                raise _redis_down("consume") from exc
        elif self.own_db is not None:
            consume = rowcount(_SQLITE_CONSUME, (digest, principal, sqlite_stamp(utcnow())))
            spent = await run_committed(await self.own_db.get(), consume)
        else:
            result = await conn.execute(
                delete(TOKENS).where(
                    TOKENS.c.id == digest,
                    TOKENS.c.principal == principal,
                    TOKENS.c.expires_at > utcnow(),
                )
            )
            await conn.commit()
            spent = result.rowcount
        if spent != 1:
            raise DuplicateRequestError()


def _redis_down(operation: str) -> UnavailableError:
    """Tokens fail closed: without Redis nobody can tell a first use from a second."""
    log.warning("idempotency_redis_unavailable", operation=operation)
    LIMIT_DEGRADED.labels("idempotency_token", "closed").inc()
    return UnavailableError(
        "Anti-duplicate tokens are unavailable; retry shortly",
        reason="idempotency_unavailable",
        headers={"Retry-After": "1"},
    )
