"""The account's own sign-in sessions: listing them and ending one (`/api/v1/user/sessions`)."""

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from apiforge.accounts.models import LoginSession, RefreshToken
from apiforge.accounts.schemas import SessionRead
from apiforge.core.errors import NotFoundError
from apiforge.core.settings import Settings
from apiforge.http.pagination import Page, PageParams, order_by
from apiforge.tools.clock import utcnow
from apiforge.tools.ids import is_id

# A session never refreshed sorts by its sign-in (NULL itself sorts differently per backend).
SORTS: dict[str, ColumnElement[Any]] = {
    "createdTime": LoginSession.created_at.expression,
    "lastRefreshedTime": func.coalesce(LoginSession.refreshed_at, LoginSession.created_at),
}


def session_end(settings: Settings, created_at: datetime) -> datetime:
    """When a session signed in at `created_at` ends, however often it is refreshed: a stolen
    refresh token kept fresh must not last for ever (`APIFORGE_SESSION_MAX_DAYS`). In whole
    seconds, as it is shown (`expiresTime`): nothing of the session works past the time shown."""
    return (created_at + timedelta(days=settings.session_max_days)).replace(microsecond=0)


def _live(settings: Settings, now: datetime) -> list[ColumnElement[bool]]:
    """A session that can still be used, as listed and as ended: not ended, within its maximum
    lifetime (the refresh token carries the rest: `_usable_token`)."""
    return [
        LoginSession.revoked_at.is_(None),
        LoginSession.created_at > now - timedelta(days=settings.session_max_days),
    ]


def _usable_token(now: datetime) -> list[ColumnElement[bool]]:
    """A refresh token that can still be exchanged: unspent and not expired."""
    return [RefreshToken.used_at.is_(None), RefreshToken.expires_at > now]


def listed(settings: Settings, now: datetime) -> list[ColumnElement[bool]]:
    """A session `/user/sessions` lists: live, with a refresh token it can still exchange."""
    return [
        *_live(settings, now),
        exists().where(RefreshToken.session_id == LoginSession.id, *_usable_token(now)),
    ]


class SessionService:
    def __init__(self, session: AsyncSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    async def list_sessions(
        self, account_id: str, current_id: str, params: PageParams
    ) -> Page[SessionRead]:
        """Sessions that can still be used: not ended, within their maximum lifetime, and
        holding an unspent refresh token that has not expired (a session left alone past the
        refresh TTL is over too)."""
        now = utcnow()
        stmt: Any = (
            select(LoginSession, func.max(RefreshToken.expires_at))
            .join(RefreshToken, RefreshToken.session_id == LoginSession.id)
            .where(
                LoginSession.account_id == account_id,
                *_live(self.settings, now),
                *_usable_token(now),
            )
            .group_by(LoginSession.id)
        )
        tiebreak = LoginSession.id.expression
        stmt = order_by(stmt, params, SORTS, "createdTime", tiebreak=tiebreak)
        total = await self.session.scalar(
            select(func.count()).select_from(stmt.order_by(None).subquery())
        )
        rows = await self.session.execute(stmt.limit(params.page_size).offset(params.offset))
        items = [
            SessionRead(
                id=login.id,
                current=login.id == current_id,
                created_time=login.created_at,
                last_refreshed_time=login.refreshed_at,
                # Tokens issued before the lifetime existed may run past the session's end.
                expires_time=min(expires_at, session_end(self.settings, login.created_at)),
                client_ip=login.client_ip,
                user_agent=login.user_agent,
            )
            for login, expires_at in rows
        ]
        return params.page(items, int(total or 0))

    async def end_session(self, account_id: str, session_id: str) -> None:
        """End one session of the account: its access tokens fail their next request (every
        request checks the session) and its refresh token is refused. Only a session the list
        shows can be ended: another account's id, an ended or expired one (past its refresh
        token or its maximum lifetime), or no id at all: the same 404, so nothing is learnt
        about others' sessions and what the list hides is never "found"."""
        now = utcnow()
        ended = (
            await self.session.execute(
                update(LoginSession)
                .where(
                    LoginSession.id == session_id,
                    LoginSession.account_id == account_id,
                    *listed(self.settings, now),
                )
                .values(revoked_at=now, revoked_reason="ended_by_user")
                .execution_options(synchronize_session=False)
            )
            if is_id(session_id)
            else None
        )
        if ended is None or ended.rowcount != 1:  # type: ignore[attr-defined]
            raise NotFoundError("Session not found", reason="session_not_found")
