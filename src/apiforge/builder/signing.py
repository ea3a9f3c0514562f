"""An app's signing secret — the HS256 key of its end users' tokens (`jwtSign`, the gateway's
token check) — sealed at rest under a key derived from the server secret, like its env secrets:
a database dump alone must not let anyone mint tokens for every app.

Sealed values are `s1:` + AES-GCM (tools/sealing.py `seal_short`), which fits the column sized
for the clear secret. A value without the prefix was stored in clear by an earlier version:
it still works, and `apiforge db upgrade` seals it (`seal_stored_secrets`).

Rotating (`rotate_signing_secret`) makes a new secret and may keep the one before it, checked but
never used to sign, until a grace ends: one previous secret at most (a second rotation drops the
older), so a leaked secret stops working by the end of the grace it was rotated with.

The same query reads when the app last revoked a user's tokens (`jwtRevoke`): a token issued
after that needs no look-up of its user's revocation at the gateway.
"""

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.builder.models import App, EndUserTokenRevocation
from apiforge.core.errors import UnavailableError
from apiforge.core.settings import Settings
from apiforge.engine.tokens import ceil_ms
from apiforge.tools.hashing import random_secret
from apiforge.tools.sealing import open_short, seal_short

PREFIX = "s1:"
_PURPOSE = b"apiforge/apps/signing-secret/v1"


@dataclass(frozen=True, slots=True)
class SigningSecrets:
    """An app's secrets in clear: `current` signs and verifies; `previous` only verifies, and only
    before `previous_until`. `revoked_ms`: the app's latest `jwtRevoke` of any user (None if
    none), so that tokens issued since need no look-up of their user's."""

    current: str
    previous: str | None = None
    previous_until: datetime | None = None
    revoked_ms: int | None = None  # milliseconds, rounded up (`engine/tokens.ceil_ms`)

    def accepted(self, clock: Callable[[], datetime]) -> tuple[str, ...]:
        """The secrets a token may be signed with now, current first (the clock is read only
        while a grace runs)."""
        if self.previous is None or self.previous_until is None:
            return (self.current,)
        if clock() < self.previous_until:
            return (self.current, self.previous)
        return (self.current,)


def new_signing_secret(settings: Settings) -> str:
    """A fresh secret, sealed for storing."""
    return _sealed(settings, random_secret(48))


def _sealed(settings: Settings, secret: str) -> str:
    return PREFIX + seal_short(settings.signing_key, _PURPOSE, secret)


def open_signing_secret(settings: Settings, stored: str) -> str:
    """The secret of a stored value; 503 when it was sealed under another server secret (tokens
    could be neither signed nor checked: the operator must restore the key)."""
    if not stored.startswith(PREFIX):
        return stored  # stored in clear by an earlier version, until `seal_stored_secrets`
    secret = open_short(settings.signing_key, _PURPOSE, stored.removeprefix(PREFIX))
    if secret is None:
        raise UnavailableError(
            "The app's signing secret was sealed under another server secret key",
            reason="signing_secret_unreadable",
        )
    return secret


async def read_signing_secrets(
    settings: Settings, conn: AsyncConnection, app_id: str
) -> SigningSecrets | None:
    """The app's secrets and latest revocation in one query, opened; None for an unknown app."""
    revocations = EndUserTokenRevocation
    latest = (
        select(func.max(revocations.revoked_at))
        .where(revocations.app_id == app_id)
        .scalar_subquery()  # the index (app_id, revoked_at) answers it alone
    )
    row = (
        await conn.execute(
            select(
                App.signing_secret,
                App.previous_signing_secret,
                App.previous_signing_secret_until,
                latest.label("revoked_at"),
            ).where(App.id == app_id)
        )
    ).first()
    if row is None:
        return None
    previous = row.previous_signing_secret
    return SigningSecrets(
        open_signing_secret(settings, row.signing_secret),
        None if previous is None else open_signing_secret(settings, previous),
        row.previous_signing_secret_until,
        None if row.revoked_at is None else ceil_ms(row.revoked_at),
    )


async def rotate_signing_secret(
    settings: Settings, conn: AsyncConnection, app_id: str, now: datetime, grace_seconds: int
) -> datetime | None:
    """Give the app a new secret; with a grace, keep the current one as the previous until
    `now + grace_seconds` (whole seconds, as shown), else drop any previous at once. One UPDATE
    that reads the current secret as it writes: of concurrent rotations, each keeps the secret
    the one before it made (PostgreSQL re-reads the row a waiting UPDATE meets; SQLite runs one
    writer at a time), never a secret already replaced. Answers when the previous one ends."""
    until = None
    previous: object = None  # no grace: the previous secret goes at once
    if grace_seconds > 0:
        until = now.replace(microsecond=0) + timedelta(seconds=grace_seconds)
        previous = App.signing_secret  # the column as the row holds it when updated
    await conn.execute(
        update(App)
        .where(App.id == app_id)
        .values(
            signing_secret=new_signing_secret(settings),
            previous_signing_secret=previous,
            previous_signing_secret_until=until,
            updated_at=App.updated_at,  # none of the app's fields shown changes, nor its ETag
        )
    )
    return until


async def seal_stored_secrets(settings: Settings, conn: AsyncConnection) -> int:
    """Seal the signing secrets an earlier version stored in clear; how many it sealed."""
    rows = await conn.execute(
        select(App.id, App.signing_secret).where(App.signing_secret.not_like(f"{PREFIX}%"))
    )
    sealed = 0
    for app_id, secret in rows.all():
        result = await conn.execute(
            update(App)
            .where(App.id == app_id, App.signing_secret == secret)
            .values(signing_secret=_sealed(settings, secret))
        )
        sealed += result.rowcount
    return sealed
