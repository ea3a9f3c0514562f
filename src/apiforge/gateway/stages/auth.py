"""Stage: who is calling. Console access tokens here; API keys and signatures plug in as
`CredentialResolver`s tried in order, the first that recognises its headers wins."""

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import select

from apiforge.accounts.models import Account, LoginSession
from apiforge.accounts.tokens import decode_access_token
from apiforge.core.errors import AuthenticationError
from apiforge.gateway.context import Caller, GatewayContext
from apiforge.gateway.stage import GatewayState


class CredentialResolver(Protocol):
    async def resolve(self, ctx: GatewayContext) -> Caller | None:
        """A caller when this resolver's credential is present and valid; None when absent;
        raises `AuthenticationError`/`ForbiddenError` when present but refused."""
        ...


class ConsoleTokenResolver:
    """`Authorization: Bearer <console access token>` when no key is given: builders calling
    their own apps. The end-user token then travels in `X-End-User-Token`."""

    def __init__(self, state: GatewayState) -> None:
        self.state = state

    async def resolve(self, ctx: GatewayContext) -> Caller | None:
        header = ctx.header("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        claims = decode_access_token(self.state.settings, token.strip())
        assert ctx.connection is not None
        row = (
            await ctx.connection.execute(
                select(Account.status, LoginSession.revoked_at)
                .join(LoginSession, LoginSession.account_id == Account.id)
                .where(LoginSession.id == claims["sid"], Account.id == claims["sub"])
            )
        ).first()
        if row is None:
            raise AuthenticationError("Session ended; sign in again", reason="session_revoked")
        # Before the session, as on the management API (accounts/deps.py): disabling ends every
        # session too, and "sign in again" would not help.
        if row.status != "active":
            raise AuthenticationError("Account is disabled", reason="account_disabled")
        if row.revoked_at is not None:
            raise AuthenticationError("Session ended; sign in again", reason="session_revoked")
        return Caller(kind="console", account_id=str(claims["sub"]))


class AuthStage:
    name = "auth"

    def __init__(self, resolvers: Sequence[CredentialResolver]) -> None:
        self.resolvers = tuple(resolvers)

    async def on_request(self, ctx: GatewayContext) -> None:
        for resolver in self.resolvers:
            caller = await resolver.resolve(ctx)
            if caller is not None:
                ctx.caller = caller
                return
        raise AuthenticationError("An API key, a signature or an access token is required")
