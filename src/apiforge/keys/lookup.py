"""The per-process view of keys and subscriptions that calls read: a cache of at most one second.

A call must not cost a key query, yet a revoked key, an expired key or a disabled subscription must
stop working within a second on every node, with no message between nodes. So every answer —
found, not found, enabled, disabled — is cached for `CACHE_TTL` (1 s) and then read again: at most
one indexed query per key (and per workspace/app pair) per second per process, and no node can
act on state older than that. Changes made through this process forget their entries at once.

One `KeyLookup` per process (built in `app.py`, shared by the gateway and the management API); it
also owns the `LastUsedTracker`.
"""

import time
from collections import OrderedDict
from typing import Any

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from apiforge.accounts.models import Account
from apiforge.builder.models import App
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
MISSING = object()


class TtlCache:
    """A bounded dict whose entries expire `ttl` seconds after they were stored."""

    __slots__ = ("_entries", "size", "ttl")

    def __init__(self, ttl: float, size: int) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: OrderedDict[Any, tuple[float, Any]] = OrderedDict()

    def get(self, key: Any) -> Any:
        """The value, or `MISSING` when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        if entry[0] <= time.monotonic():
            self._entries.pop(key, None)
            return MISSING
        return entry[1]

    def put(self, key: Any, value: Any) -> None:
        self._entries[key] = (time.monotonic() + self.ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def drop(self, key: Any) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


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


class KeyLookup:
    """Cached reads of keys and subscriptions for calls; one per process."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        *,
        ttl: float = CACHE_TTL,
        max_entries: int = MAX_ENTRIES,
        flush_interval: float = 15.0,
    ) -> None:
        self.settings = settings
        self._by_hash = TtlCache(ttl, max_entries)
        self._signing = TtlCache(ttl, max_entries)
        self._subscriptions = TtlCache(ttl, max_entries)
        self.last_used = LastUsedTracker(engine, interval=flush_interval)

    @property
    def sealer(self) -> SecretSealer:
        return sealer_for(self.settings.signing_key)

    async def key(self, conn: AsyncConnection, secret: str) -> KeyRecord | None:
        """The key whose secret is `secret`, or None (also for anything not shaped like a key,
        which costs no query)."""
        if not looks_like_key(secret):
            return None
        digest = secret_hash(secret)
        cached = self._by_hash.get(digest)
        if cached is not MISSING:
            record: KeyRecord | None = cached
            return record
        row = (await conn.execute(_KEY_QUERY.where(ApiKey.secret_hash == digest))).first()
        record = None if row is None else _record(row)
        self._by_hash.put(digest, record)
        return record

    async def signing_key_for(
        self, conn: AsyncConnection, key_id: str
    ) -> tuple[KeyRecord, str] | None:
        """The key `key_id` and its secret, to verify an HMAC signature made with it; None for
        an unknown id or a secret sealed under a previous server secret. The caller still runs
        `check_key` (revoked, expired, IPs) on the record."""
        cached = self._signing.get(key_id)
        if cached is not MISSING:
            found: tuple[KeyRecord, str] | None = cached
            return found
        found = None
        if is_id(key_id):
            row = (await conn.execute(_KEY_QUERY.where(ApiKey.id == key_id))).first()
            if row is not None:
                secret = self.sealer.open(row.sealed_secret)
                found = None if secret is None else (_record(row), secret)
        self._signing.put(key_id, found)
        return found

    async def subscription_enabled(
        self, conn: AsyncConnection, workspace_id: str, app_id: str
    ) -> bool:
        """Whether `workspace_id` may call `app_id` now: an enabled subscription, and the app is
        public or its own (an app made private stops serving outside workspaces)."""
        key = (workspace_id, app_id)
        cached = self._subscriptions.get(key)
        if cached is not MISSING:
            return bool(cached)
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
        enabled = found is not None
        self._subscriptions.put(key, enabled)
        return enabled

    def forget_key(self, key_id: str, digest: str) -> None:
        """Drop a changed key from this process's caches (other nodes: within `CACHE_TTL`)."""
        self._by_hash.drop(digest)
        self._signing.drop(key_id)

    def forget_subscription(self, workspace_id: str, app_id: str) -> None:
        self._subscriptions.drop((workspace_id, app_id))

    async def close(self) -> None:
        await self.last_used.close()
