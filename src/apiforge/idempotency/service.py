"""Issuing anti-duplicate tokens (spending them is the edges' job, in one atomic step)."""

from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.idempotency.schemas import IdempotencyTokenRead
from apiforge.idempotency.store import IdempotencyStore


class IdempotencyTokenService:
    def __init__(self, session: AsyncSession, store: IdempotencyStore) -> None:
        self.session = session
        self.store = store

    async def issue(self, principal: str) -> IdempotencyTokenRead:
        """A token only `principal` can spend, once, before it expires."""
        connection = await self.session.connection()
        token, expires = await self.store.tokens.issue(connection, principal)
        await self.store.sweep_if_due(connection)  # committed with the token
        return IdempotencyTokenRead(token=token, expires_time=expires)
