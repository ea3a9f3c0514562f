"""End users' token revocations (`jwtRevoke`): written in a call's transaction, read by the gateway.

A row is `(app, partition, sub) -> revoked_at`: the gateway refuses that user's tokens of that
partition issued before it (`tokens.is_revoked`). The partition is the calling workspace, as for
the user system's rights, so one consumer of an app never signs out another consumer's users.

The write holds what a right's grant holds, in the same order (`datasets/holding.py`): the
records table, then the calling and the app's workspace rows, then its own row; a revocation
racing the app's or the workspace's deletion is then a 404 (`app_not_found`,
`workspace_not_found`), never a deadlock or a foreign key's 500. The deletions take the rows
with them (foreign keys, as `user_rights`).

The gateway reads a user's revocation only for a token issued before the app's latest one
(read with the app's signing secrets): per process, at most once a `REVOCATION_TTL` per user
(`RevocationCache`). The revoking process forgets both entries once its call commits, so it
refuses the revoked tokens at once; other processes within that TTL.

Rows are pruned once they can refuse nothing (`prune_revocations`, run hourly by every server
process's retention task, `usage/retention.py`). A row is per (app, partition, user), updated in
place, yet their number is not bounded by anything an app controls: any string can be a `sub`,
so an API that revokes `args.userId` adds a row per distinct value. A revocation at `R` refuses
only tokens with `iat` < `R`; `jwtSign` writes `exp` at most `MAX_EXPIRES_IN` after `iat` (both
from the clock of the call that signs, `exp` in whole seconds rounded down, `iat` never before
the call's start), so every such token has `exp` < `R` + `MAX_EXPIRES_IN`, and the gateway
refuses a token at its `exp` with no leeway. A row goes once that bound is `CLOCK_SKEW_SECONDS`
in the past by the pruning node's clock: expired on every node whose clock is at most that much
behind it. The app's latest revocation (`max(revoked_at)`, read with its secrets) stays right:
a pruned row refused only expired tokens, so the rows left refuse exactly what all of them did,
and a cached latest one that was pruned only costs a look-up that finds nothing.
"""

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, and_, delete, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from apiforge.builder.models import EndUserTokenRevocation
from apiforge.core.cache import RefreshingCache
from apiforge.datasets.holding import hold_partition_and_app
from apiforge.engine.secrets import SECRET_TTL
from apiforge.engine.tokens import MAX_EXPIRES_IN, ceil_ms
from apiforge.tools.clock import CLOCK_SKEW_SECONDS, utcnow

TABLE = cast(Table, EndUserTokenRevocation.__table__)
# Seconds another process may still accept a revoked token: as long as the app's secrets and
# latest revocation stay cached (`SECRET_TTL`).
REVOCATION_TTL = SECRET_TTL
REVOCATION_CACHE_SIZE = 8192  # users whose older tokens were checked, per process
# How long a row is kept: the longest a token it refuses may still be valid, on any node.
PRUNE_AFTER = timedelta(seconds=MAX_EXPIRES_IN + CLOCK_SKEW_SECONDS)
PRUNE_BATCH = 5_000  # rows per delete transaction (as the call logs' retention)
PRUNE_MAX_BATCHES = 200  # per round: a backlog is worked off over the next rounds


@dataclass(frozen=True, slots=True)
class RevocationKey:
    app_id: str
    workspace_id: str  # the partition
    sub: str

    @property
    def fits(self) -> bool:
        """Whether a row can exist for this key: never for a `sub` holding NUL, which neither
        step takes and PostgreSQL refuses as a query parameter (a token an earlier version
        signed for one must get an answer, not a 500)."""
        return "\x00" not in self.sub

    def where(self) -> ColumnElement[bool]:
        c = TABLE.c
        return and_(c.app_id == self.app_id, c.workspace_id == self.workspace_id, c.sub == self.sub)


async def revoke_tokens(connection: AsyncConnection, key: RevocationKey, at: datetime) -> None:
    """Revoke the user's tokens issued before `at` (a time rounded to the millisecond), in the
    connection's transaction; a later revocation already stored is kept."""
    await hold_partition_and_app(connection, key.workspace_id, key.app_id)
    module = postgresql if connection.dialect.name == "postgresql" else sqlite
    insert = module.insert(TABLE).values(
        app_id=key.app_id, workspace_id=key.workspace_id, sub=key.sub, revoked_at=at
    )
    await connection.execute(
        insert.on_conflict_do_update(
            index_elements=[TABLE.c.app_id, TABLE.c.workspace_id, TABLE.c.sub],
            set_={"revoked_at": insert.excluded.revoked_at},
            where=TABLE.c.revoked_at < insert.excluded.revoked_at,
        )
    )


async def revoked_ms_of(connection: AsyncConnection, key: RevocationKey) -> int | None:
    """When the user's tokens were last revoked, in milliseconds; None if never."""
    if not key.fits:
        return None
    revoked_at = await connection.scalar(select(TABLE.c.revoked_at).where(key.where()))
    return None if revoked_at is None else ceil_ms(revoked_at)


async def prune_revocations(engine: AsyncEngine, now: datetime | None = None) -> int:
    """Delete the revocations older than `PRUNE_AFTER` (at most `PRUNE_MAX_BATCHES` batches of
    `PRUNE_BATCH`, each in a short transaction of its own); returns how many went.

    The delete checks `revoked_at` itself, not only the keys its sub-select found: a row
    revoked again meanwhile (updated in place to now) is kept. PostgreSQL re-checks a row's
    conditions when a concurrent update of it commits, but a key list read before would still
    match; SQLite runs one writer at a time. Every process prunes: the same rows deleted twice
    are harmless."""
    cutoff = (now or utcnow()) - PRUNE_AFTER
    c = TABLE.c
    key = tuple_(c.app_id, c.workspace_id, c.sub)
    old = (
        select(c.app_id, c.workspace_id, c.sub)
        .where(c.revoked_at < cutoff)
        .order_by(c.app_id, c.workspace_id, c.sub)  # concurrent prunes lock rows in one order
        .limit(PRUNE_BATCH)
    )
    removed = 0
    for _ in range(PRUNE_MAX_BATCHES):
        async with engine.begin() as connection:
            result = await connection.execute(
                delete(TABLE).where(key.in_(old), c.revoked_at < cutoff)
            )
        count = int(result.rowcount or 0)
        removed += count
        if count < PRUNE_BATCH:
            break
        await asyncio.sleep(0)  # the calls' statements go first
    return removed


class RevocationCache:
    """`RevocationKey` -> the user's revocation in ms (or None), read at most once a `ttl` per
    user (`RefreshingCache`; None answers kept apart, so they never push out revocations)."""

    def __init__(
        self,
        size: int = REVOCATION_CACHE_SIZE,
        ttl: float = REVOCATION_TTL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        async def read(connection: AsyncConnection, key: RevocationKey) -> int | None:
            return await revoked_ms_of(connection, key)

        self._cache = RefreshingCache[RevocationKey, int | None](
            ttl, size, read, clock, misses=size
        )

    async def get(self, key: RevocationKey, connection: AsyncConnection) -> int | None:
        """The user's revocation; a miss reads it on the call's own connection."""
        return await self._cache.get(connection, key)

    def forget(self, key: RevocationKey) -> None:
        """Read the user's revocation again on its next check (revoked through this process)."""
        self._cache.forget(key)

    async def close(self) -> None:
        await self._cache.close()
