"""The per-process view of keys and subscriptions that calls read: a cache of at most one second.

A call must not cost a key query, yet a revoked key, an expired key or a disabled subscription must
stop working within a second on every node, with no message between nodes. So every answer —
found, not found, enabled, disabled — is cached for `CACHE_TTL` (1 s): no node acts on state read
longer ago than that. Entries in use are read again ahead of their expiry, in the background
(`core/cache.py`): about two indexed queries per key (and per workspace/app pair) per second per
process, and no call waits for them. Changes made through this process forget their entries at
once.

One `KeyLookup` per process (built in `app.py`, shared by the gateway and the management API); it
also owns the `LastUsedTracker`.
"""

from collections.abc import Sequence
from typing import Any

import structlog
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apiforge.accounts.models import Account
from apiforge.builder.models import App
from apiforge.core.cache import RefreshingCache
from apiforge.core.settings import Settings
from apiforge.keys.crypto import SecretSealer, looks_like_key, sealer_for, secret_hash
from apiforge.keys.lastused import LastUsedTracker
from apiforge.keys.models import ApiKey, Subscription
from apiforge.keys.policy import KeyRecord, effective_role
from apiforge.tools.ids import is_id
from apiforge.tools.netpolicy import parse_networks
from apiforge.workspaces.models import Membership

CACHE_TTL = 1.0  # seconds; the bound on how long a node may act on a revoked key
MAX_ENTRIES = 10_000
# "Not found" answers, kept apart: made-up keys cannot push real ones out (core/cache.py).
MAX_MISSES = 1_000

log = structlog.get_logger("apiforge.keys")


def _key_query() -> Select[Any]:
    """The key with its creator's current role in the key's workspace and account status."""
    keys, members, accounts = ApiKey.__table__, Membership.__table__, Account.__table__
    return select(
        keys.c.id,
        keys.c.kind,
        keys.c.workspace_id,
        keys.c.app_id,
        keys.c.subscription_id,
        keys.c.role,
        keys.c.created_by,
        keys.c.expires_at,
        keys.c.revoked_at,
        keys.c.allowed_ips,
        keys.c.allowed_origins,
        keys.c.sealed_secret,
        members.c.role.label("member_role"),
        accounts.c.status.label("account_status"),
    ).select_from(
        keys.outerjoin(
            members,
            and_(
                members.c.workspace_id == keys.c.workspace_id,
                members.c.account_id == keys.c.created_by,
            ),
        ).outerjoin(accounts, accounts.c.id == keys.c.created_by)
    )


_KEY_QUERY = _key_query()


def _record(row: Any) -> KeyRecord:
    role = None
    if row.kind == "ws" and row.account_status == "active":
        role = effective_role(row.role, row.member_role)
    return KeyRecord(
        id=row.id,
        kind=row.kind,
        workspace_id=row.workspace_id,
        app_id=row.app_id,
        subscription_id=row.subscription_id,
        role=role,
        account_id=row.created_by,
        expires_at=row.expires_at,
        revoked=row.revoked_at is not None,
        allowed_ips=parse_networks(row.allowed_ips or ()),
        allowed_origins=frozenset(str(o).lower() for o in row.allowed_origins or ()),
    )


async def _read_key(conn: AsyncConnection, digest: str) -> KeyRecord | None:
    row = (await conn.execute(_KEY_QUERY.where(ApiKey.secret_hash == digest))).first()
    return None if row is None else _record(row)


async def _read_subscription(conn: AsyncConnection, pair: tuple[str, str]) -> bool:
    workspace_id, app_id = pair
    found = await conn.scalar(
        select(Subscription.id)
        .join(App, App.id == Subscription.app_id)
        .where(
            Subscription.workspace_id == workspace_id,
            Subscription.app_id == app_id,
            Subscription.enabled.is_(True),
            or_(App.visibility == "public", App.workspace_id == workspace_id),
        )
    )
    return found is not None


class KeyLookup:
    """Cached reads of keys and subscriptions for calls; one per process."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        *,
        ttl: float = CACHE_TTL,
        max_entries: int = MAX_ENTRIES,
        max_misses: int = MAX_MISSES,
        flush_interval: float = 15.0,
    ) -> None:
        self.settings = settings
        self._by_hash = RefreshingCache[str, KeyRecord | None](
            ttl, max_entries, _read_key, misses=max_misses
        )
        self._signing = RefreshingCache[str, tuple[KeyRecord, str | None] | None](
            ttl, max_entries, self._read_signing_key, misses=max_misses
        )
        self._subscriptions = RefreshingCache[tuple[str, str], bool](
            ttl, max_entries, _read_subscription
        )
        self.last_used = LastUsedTracker(engine, interval=flush_interval)

    @property
    def sealer(self) -> SecretSealer:
        return sealer_for(self.settings.signing_key)

    async def key(self, conn: AsyncConnection, secret: str) -> KeyRecord | None:
        """The key whose secret is `secret`, or None (also for anything not shaped like a key,
        which costs no query)."""
        if not looks_like_key(secret):
            return None
        return await self._by_hash.get(conn, secret_hash(secret))

    async def signing_key_for(
        self, conn: AsyncConnection, key_id: str
    ) -> tuple[KeyRecord, str | None] | None:
        """The key `key_id` and its secret, to verify an HMAC signature made with it; None for
        an unknown id (anything not shaped like an id costs no query and takes no cache entry,
        so junk cannot push real keys out); the secret is None when it was sealed under a
        previous server secret (logged at each read). The caller still runs `check_key`
        (revoked, expired, IPs) on the record."""
        if not is_id(key_id):
            return None
        return await self._signing.get(conn, key_id)

    async def _read_signing_key(
        self, conn: AsyncConnection, key_id: str
    ) -> tuple[KeyRecord, str | None] | None:
        row = (await conn.execute(_KEY_QUERY.where(ApiKey.id == key_id))).first()
        if row is None:
            return None
        secret = self.sealer.open(row.sealed_secret)
        if secret is None:
            log.error("key_secret_unreadable", key_id=key_id)  # the server secret changed
        return _record(row), secret

    async def subscription_enabled(
        self, conn: AsyncConnection, workspace_id: str, app_id: str
    ) -> bool:
        """Whether `workspace_id` may call `app_id` now: an enabled subscription, and the app is
        public or its own (an app made private stops serving outside workspaces)."""
        return await self._subscriptions.get(conn, (workspace_id, app_id))

    def forget_key(self, key_id: str, digest: str) -> None:
        """Drop a changed key from this process's caches (other nodes: within `CACHE_TTL`)."""
        self._by_hash.forget(digest)
        self._signing.forget(key_id)

    def forget_subscription(self, workspace_id: str, app_id: str) -> None:
        self._subscriptions.forget((workspace_id, app_id))

    def forget_app(self, app_id: str) -> None:
        """Drop every workspace's answer for `app_id`: an app made private (or deleted) through
        this process stops serving other workspaces' keys at once, not a second later."""
        self._subscriptions.forget_where(lambda pair: pair[1] == app_id)

    def forget_workspaces(self, workspace_ids: Sequence[str]) -> None:
        """Drop deleted workspaces' keys and subscription answers: their keys stop at once on
        this node (a call in that second would write records nobody can ever delete)."""
        gone = frozenset(workspace_ids)
        self._subscriptions.forget_where(lambda pair: pair[0] in gone)
        self._by_hash.forget_values(lambda key: key is not None and key.workspace_id in gone)
        self._signing.forget_values(lambda pair: pair is not None and pair[0].workspace_id in gone)

    def forget_member(self, workspace_id: str, account_id: str) -> None:
        """Drop the `ws-` keys a member made in a workspace, whose role they carry: once the member
        leaves it (or changes role) their keys follow at once on this node, not a second later."""

        def made_there(key: KeyRecord | None) -> bool:
            return (
                key is not None
                and key.kind == "ws"
                and key.workspace_id == workspace_id
                and key.account_id == account_id
            )

        self._by_hash.forget_values(made_there)
        self._signing.forget_values(lambda pair: pair is not None and made_there(pair[0]))

    async def close(self) -> None:
        for cache in (self._by_hash, self._signing, self._subscriptions):
            await cache.close()
        await self.last_used.close()
