"""The idempotency store on the database: claim a key, complete it with the response, replay it.

The database, not Redis, is the truth for keys and sequence numbers: the stored response must
commit in the same transaction as the call's effects (gateway), so that a crash can never leave
effects without a record and let a retry execute twice. The "in flight" lock is the same row,
inserted in its own short transaction, so it holds across processes and hosts.

Anti-duplicate tokens live in Redis when it is configured (one atomic compare-and-delete) and in
the database otherwise (one conditional DELETE).
"""

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import structlog
from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.core.errors import ApiforgeError, ConflictError, UnavailableError
from apiforge.core.settings import Settings
from apiforge.idempotency.models import IdempotencyRecord, IdempotencyToken
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import new_id

log = structlog.get_logger(__name__)

RECORDS = cast(Table, IdempotencyRecord.__table__)
TOKENS = cast(Table, IdempotencyToken.__table__)
SWEEP_INTERVAL = 300.0  # seconds between sweeps of expired rows, per process
SWEEP_BATCH = 500

# Compare-and-delete: a token is spent only by the caller it was issued to.
_CONSUME_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class KeyInUseError(ConflictError):
    reason = "idempotency_key_in_use"
    message = "A request with this idempotency key is still running; retry shortly"

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


class KeyMismatchError(ApiforgeError):
    status = 422
    reason = "idempotency_key_mismatch"
    message = "This idempotency key was already used with a different request"


class DuplicateRequestError(ConflictError):
    reason = "duplicate_request"
    message = "This anti-duplicate token was already used (or never issued to you)"


@dataclass(frozen=True, slots=True)
class Claim:
    """This request owns the key: it must `complete` it with the response or `release` it."""

    id: str
    owner: str


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class IdempotencyStore:
    """Claims, completions and tokens; one per process, stateless apart from the sweep clock."""

    def __init__(self, settings: Settings, redis: Any = None) -> None:
        self.retention = timedelta(seconds=settings.idempotency_retention_seconds)
        self.lease = timedelta(seconds=settings.idempotency_lease_seconds)
        self.token_ttl = settings.idempotency_token_ttl_seconds
        self.redis = redis
        self.prefix = f"{settings.redis_prefix}idem-token:"
        self._consume = redis.register_script(_CONSUME_LUA) if redis is not None else None
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL

    async def claim(
        self, conn: AsyncConnection, record_id: str, fingerprint: str
    ) -> Claim | StoredResponse:
        """Own `record_id`, or get the response stored for it. Commits its own short transaction.

        422 when the key was used with another payload, 409 while its first request runs. A dead
        row (lease or retention over) is taken over by a conditional UPDATE, so of two racing
        takers exactly one wins.
        """
        owner = new_id()
        for _ in range(3):
            now = utcnow()
            inserted = await conn.execute(
                _insert_ignoring_conflict(conn).values(
                    id=record_id,
                    fingerprint=fingerprint,
                    owner=owner,
                    created_at=now,
                    expires_at=now + self.lease,
                )
            )
            if inserted.rowcount == 1:
                await self._maybe_sweep(conn, now)
                await conn.commit()
                return Claim(record_id, owner)
            row = (
                await conn.execute(
                    select(
                        RECORDS.c.fingerprint,
                        RECORDS.c.owner,
                        RECORDS.c.status,
                        RECORDS.c.headers,
                        RECORDS.c.body,
                        RECORDS.c.expires_at,
                    ).where(RECORDS.c.id == record_id)
                )
            ).first()
            if row is None:  # released between our INSERT and SELECT: try again
                await conn.commit()
                continue
            if row.expires_at <= now:
                taken = await conn.execute(
                    update(RECORDS)
                    .where(
                        RECORDS.c.id == record_id,
                        RECORDS.c.owner == row.owner,
                        RECORDS.c.expires_at <= now,
                    )
                    .values(
                        fingerprint=fingerprint,
                        owner=owner,
                        status=None,
                        headers=None,
                        body=None,
                        created_at=now,
                        expires_at=now + self.lease,
                    )
                )
                await conn.commit()
                if taken.rowcount == 1:
                    return Claim(record_id, owner)
                continue
            await conn.commit()
            if row.fingerprint != fingerprint:
                raise KeyMismatchError()
            if row.status is None:
                raise KeyInUseError()
            return StoredResponse(row.status, dict(row.headers or {}), bytes(row.body or b""))
        raise KeyInUseError()  # three lost races in a row: the key is busy

    async def complete(self, conn: AsyncConnection, claim: Claim, response: StoredResponse) -> None:
        """Store the response on the claimed row, in the caller's transaction (not committed
        here). 409 when the claim was lost (its lease ran out and another request took it): the
        caller must roll back, so only one request's effects ever commit."""
        done = await conn.execute(
            update(RECORDS)
            .where(RECORDS.c.id == claim.id, RECORDS.c.owner == claim.owner)
            .values(
                status=response.status,
                headers=response.headers,
                body=response.body,
                expires_at=utcnow() + self.retention,
            )
        )
        if done.rowcount != 1:
            raise KeyInUseError()

    async def release(self, conn: AsyncConnection, claim: Claim) -> None:
        """Forget an unfinished claim (the request failed, nothing committed): a retry runs
        afresh. Commits."""
        await conn.execute(
            delete(RECORDS).where(
                RECORDS.c.id == claim.id,
                RECORDS.c.owner == claim.owner,
                RECORDS.c.status.is_(None),
            )
        )
        await conn.commit()

    async def issue_token(self, conn: AsyncConnection, principal: str) -> tuple[str, datetime]:
        """A new one-time token bound to `principal` (the caller commits the database row)."""
        token = secrets.token_urlsafe(32)
        digest = hashlib.sha256(token.encode()).hexdigest()
        expires = utcnow() + timedelta(seconds=self.token_ttl)
        if self.redis is not None:
            try:
                await self.redis.set(self.prefix + digest, principal, ex=self.token_ttl)
            except Exception as exc:
                raise _redis_down("issue") from exc
        else:
            await conn.execute(
                insert(TOKENS).values(id=digest, principal=principal, expires_at=expires)
            )
        return token, expires

    async def consume_token(self, conn: AsyncConnection, digest: str, principal: str) -> None:
        """Spend a token atomically (one compare-and-delete); 409 `duplicate_request` when it was
        spent already, expired, or issued to someone else. Commits on the database."""
        if self._consume is not None:
            try:
                spent = await self._consume(keys=[self.prefix + digest], args=[principal])
            except Exception as exc:
                raise _redis_down("consume") from exc
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

    async def sweep(self, conn: AsyncConnection, now: datetime | None = None) -> int:
        """Delete up to one batch of dead records and tokens (not committed here)."""
        now = now or utcnow()
        removed = 0
        for table in (RECORDS, TOKENS):
            dead = select(table.c.id).where(table.c.expires_at <= now).limit(SWEEP_BATCH)
            result = await conn.execute(delete(table).where(table.c.id.in_(dead)))
            removed += result.rowcount
        return removed

    async def _maybe_sweep(self, conn: AsyncConnection, now: datetime) -> None:
        """Lazy purge: at most every few minutes per process, piggybacked on a claim's
        transaction, so expired rows never pile up and no separate worker is needed."""
        if time.monotonic() < self._next_sweep:
            return
        self._next_sweep = time.monotonic() + SWEEP_INTERVAL
        removed = await self.sweep(conn, now)
        if removed:
            log.info("idempotency_swept", removed=removed)


def _insert_ignoring_conflict(conn: AsyncConnection) -> Any:
    if conn.dialect.name == "postgresql":
        return pg_insert(RECORDS).on_conflict_do_nothing(index_elements=["id"])
    return sqlite_insert(RECORDS).on_conflict_do_nothing(index_elements=["id"])


def _redis_down(operation: str) -> UnavailableError:
    """Tokens fail closed: without Redis nobody can tell a first use from a second."""
    log.warning("idempotency_redis_unavailable", operation=operation)
    return UnavailableError(
        "Anti-duplicate tokens are unavailable; retry shortly", reason="idempotency_unavailable"
    )
