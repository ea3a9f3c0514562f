"""Apps' signing secrets as the gateway's end-user token check reads them: cached per process.

An app's secret changes when a member rotates it (`builder/signing.py`). The rotating process
forgets the app at once (the `app_changed` hook, after the commit); every other process reads
the secrets again within `SECRET_TTL` (`core/cache.py` re-reads them ahead of that, in the
background), so a token refused by a rotation without a grace may pass on another node for at
most that long. Current and previous secret come from one query, a miss only: a hit costs none;
the same query reads the app's latest revocation of a user's tokens (`engine/revocations.py`).

The other way round, a node holding the secrets from before another node's rotation would refuse
the tokens that node's `jwtSign` now signs with the new secret, until its entry expires: a token
none of the cached secrets signed has them read again (`reread`), at most once a
`SECRET_RECHECK` per app, so that made-up tokens cost a query at most that often.
"""

import time
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.builder.signing import SigningSecrets
from apiforge.core.cache import RefreshingCache

SECRET_TTL = 1.0  # seconds another node may accept a secret rotated away; as keys (`CACHE_TTL`)
SECRET_CACHE_SIZE = 4096
SECRET_RECHECK = 0.1  # seconds between re-reads after a token the cached secrets refuse

Load = Callable[[str, AsyncConnection], Awaitable[SigningSecrets]]


class SecretCache:
    """App id -> `SigningSecrets`, read at most once a `ttl` per app (`RefreshingCache`)."""

    def __init__(
        self,
        load: Load,
        size: int = SECRET_CACHE_SIZE,
        ttl: float = SECRET_TTL,
        recheck: float = SECRET_RECHECK,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.recheck = recheck

        async def read(connection: AsyncConnection, app_id: str) -> SigningSecrets:
            return await load(app_id, connection)

        self._cache = RefreshingCache[str, SigningSecrets](ttl, size, read, clock)

    async def get(self, app_id: str, connection: AsyncConnection) -> SigningSecrets:
        """The app's secrets; a miss reads them on the call's own connection."""
        return await self._cache.get(connection, app_id)

    async def reread(self, app_id: str, connection: AsyncConnection) -> SigningSecrets | None:
        """The app's secrets read again, after a token the cached ones did not sign (another
        node may have rotated them and signed it with the new one); None when they were read
        less than `recheck` ago."""
        return await self._cache.reread(connection, app_id, self.recheck)

    def forget(self, app_id: str) -> None:
        """Read the app's secrets again on its next call (rotated, or one of its users' tokens
        revoked, through this process)."""
        self._cache.forget(app_id)

    async def close(self) -> None:
        await self._cache.close()
