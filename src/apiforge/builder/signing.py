"""An app's signing secret — the HS256 key of its end users' tokens (`jwtSign`, the gateway's
token check) — sealed at rest under a key derived from the server secret, like its env secrets:
a database dump alone must not let anyone mint tokens for every app.

Sealed values are `s1:` + AES-GCM (tools/sealing.py `seal_short`), which fits the column sized
for the clear secret. A value without the prefix was stored in clear by an earlier version:
it still works, and `apiforge db upgrade` seals it (`seal_stored_secrets`).
"""

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.builder.models import App
from apiforge.core.errors import UnavailableError
from apiforge.core.settings import Settings
from apiforge.tools.hashing import random_secret
from apiforge.tools.sealing import open_short, seal_short

PREFIX = "s1:"
_PURPOSE = b"apiforge/apps/signing-secret/v1"


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
