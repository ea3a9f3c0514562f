"""Who is calling the management API: the `CurrentAccount` and `AdminAccount` dependencies."""

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import select

from apiforge.accounts.models import Account, LoginSession
from apiforge.accounts.service import AccountService
from apiforge.accounts.throttle import LoginThrottle
from apiforge.accounts.tokens import decode_access_token
from apiforge.core.errors import AuthenticationError, ForbiddenError
from apiforge.http.deps import SessionDep, SettingsDep


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def _current_account(request: Request, session: SessionDep, settings: SettingsDep) -> Account:
    # Seam for later credentials (ws- keys, OAuth2 tokens): each resolves to an account here.
    token = bearer_token(request)
    if token is None:
        raise AuthenticationError()
    claims = decode_access_token(settings, token)
    row = (
        await session.execute(
            select(Account, LoginSession.revoked_at)
            .join(LoginSession, LoginSession.account_id == Account.id)
            .where(LoginSession.id == claims["sid"], Account.id == claims["sub"])
        )
    ).first()
    if row is None or row.revoked_at is not None:
        raise AuthenticationError("Session ended; sign in again", reason="session_revoked")
    account: Account = row.Account
    if account.status != "active":
        raise AuthenticationError("Account is disabled", reason="account_disabled")
    request.state.account_id = account.id
    request.state.session_id = claims["sid"]
    return account


async def _admin_account(account: "CurrentAccount") -> Account:
    if not account.is_admin:
        raise ForbiddenError("Administrator access required", reason="admin_required")
    return account


CurrentAccount = Annotated[Account, Depends(_current_account)]
AdminAccount = Annotated[Account, Depends(_admin_account)]


def _account_service(
    request: Request, session: SessionDep, settings: SettingsDep
) -> AccountService:
    throttle = LoginThrottle(
        request.app.state.limits_storage, settings.login_max_failures, settings.login_window_seconds
    )
    return AccountService(session, settings, throttle)


AccountServiceDep = Annotated[AccountService, Depends(_account_service)]
