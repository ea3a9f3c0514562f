"""A console session ends in whole seconds, as its `expiresTime` shows it: its refresh token
stops at the second shown, not up to a second after it, and no access token outlives the
session (none is issued once it is over). The clock is frozen where the tokens are issued."""

from datetime import datetime, timedelta

import jwt
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select, update

from apiforge.accounts.models import LoginSession, RefreshToken
from apiforge.core.db import session_scope
from apiforge.tools.clock import utcnow
from tests.e2e._accounts import refresh
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import register


def _claims(token: str) -> dict[str, int | str]:
    claims: dict[str, int | str] = jwt.decode(token, options={"verify_signature": False})
    return claims


async def _session_ending_at(app: FastAPI, session_id: str, end: datetime) -> None:
    """Move the session's sign-in so that its maximum lifetime ends at `end` (to the µs)."""
    created = end - timedelta(days=app.state.settings.session_max_days)
    async for session in session_scope(app.state.sessionmaker):
        await session.execute(
            update(LoginSession).where(LoginSession.id == session_id).values(created_at=created)
        )


def _freeze(monkeypatch: pytest.MonkeyPatch, now: datetime) -> None:
    for module in ("apiforge.accounts.service", "apiforge.accounts.tokens"):
        monkeypatch.setattr(f"{module}.utcnow", lambda: now)


async def _unspent_expiry(app: FastAPI, session_id: str) -> datetime:
    async for session in session_scope(app.state.sessionmaker):
        expires = await session.scalar(
            select(RefreshToken.expires_at).where(
                RefreshToken.session_id == session_id, RefreshToken.used_at.is_(None)
            )
        )
    assert expires is not None
    return expires


async def test_a_session_ends_at_the_second_it_shows(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register(client)
    sid = str(_claims(user.access_token)["sid"])
    second = utcnow().replace(microsecond=0)
    await _session_ending_at(app, sid, second + timedelta(seconds=5, microseconds=800_000))
    _freeze(monkeypatch, second + timedelta(microseconds=100_000))
    pair = data_of(await refresh(client, user.refresh_token))
    shown_end = second + timedelta(seconds=5)
    assert await _unspent_expiry(app, sid) == shown_end  # stored in whole seconds
    assert _claims(pair["accessToken"])["exp"] == shown_end.timestamp()
    assert pair["expiresIn"] == 4  # 4.9 s left, rounded down
    # Past the second shown, within the fraction the old end had: refused.
    _freeze(monkeypatch, shown_end + timedelta(microseconds=500_000))
    assert_error(await refresh(client, pair["refreshToken"]), 401, "session_expired")


async def test_no_access_token_outlives_its_session(
    app: FastAPI, client: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await register(client)
    sid = str(_claims(user.access_token)["sid"])
    second = utcnow().replace(microsecond=0)
    end = second + timedelta(seconds=1, microseconds=300_000)
    await _session_ending_at(app, sid, end)
    _freeze(monkeypatch, second + timedelta(microseconds=100_000))
    # Under a second left (to the whole second shown): a token that ends with the session.
    pair = data_of(await refresh(client, user.refresh_token))
    assert pair["expiresIn"] == 0
    assert _claims(pair["accessToken"])["exp"] == (second + timedelta(seconds=1)).timestamp()
    # The session's end (to the µs) is under a second away but past its whole second: over, no
    # token of a second's lifetime that would outlive it.
    _freeze(monkeypatch, second + timedelta(seconds=1, microseconds=100_000))
    assert_error(await refresh(client, pair["refreshToken"]), 401, "session_expired")
