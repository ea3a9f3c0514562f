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
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, and_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from apiforge.builder.models import EndUserTokenRevocation
from apiforge.core.cache import RefreshingCache
from apiforge.datasets.holding import hold_partition_and_app
from apiforge.engine.secrets import SECRET_TTL
from apiforge.engine.tokens import ceil_ms

TABLE = cast(Table, EndUserTokenRevocation.__table__)
# Seconds another process may still accept a revoked token: as long as the app's secrets and
# latest revocation stay cached (`SECRET_TTL`).
REVOCATION_TTL = SECRET_TTL
REVOCATION_CACHE_SIZE = 8192  # users whose older tokens were checked, per process


@dataclass(frozen=True, slots=True)
class RevocationKey:
    app_id: str
    workspace_id: str  # the partition
    sub: str

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
    revoked_at = await connection.scalar(select(TABLE.c.revoked_at).where(key.where()))
    return None if revoked_at is None else ceil_ms(revoked_at)


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
