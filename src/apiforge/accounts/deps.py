"""Who is calling the management API: `CallerAccount`, `CurrentAccount` and `AdminAccount`.

`CallerAccount` accepts a console access token or a `ws-` workspace key; workspace-scoped routes
see it through `workspaces/deps.py`, which confines a key to its workspace and role.
`CurrentAccount` (person-level routes) and `AdminAccount` refuse keys.
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.accounts.models import Account, LoginSession
from apiforge.accounts.service import AccountService, Client
from apiforge.accounts.sessions import SessionService
from apiforge.accounts.throttle import LoginThrottle
from apiforge.accounts.tokens import decode_access_token
from apiforge.core.errors import AuthenticationError, ForbiddenError
from apiforge.core.settings import Settings
from apiforge.http.deps import SessionDep, SettingsDep, client_ip
from apiforge.keys.lookup import KeyLookup
from apiforge.keys.policy import KeyRecord, check_key
from apiforge.tools.clock import utcnow


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def workspace_key(request: Request) -> KeyRecord | None:
    """The `ws-` key this request authenticated with, if any (set by `_caller_account`)."""
    record: KeyRecord | None = getattr(request.state, "workspace_key", None)
    return record


def key_secret(request: Request, bearer: tuple[str, ...] = ("ws-",)) -> str | None:
    """A key in `X-Api-Key`, or one of the `bearer` kinds as `Authorization: Bearer <key>`
    (seed 000: "API key or OAuth2 bearer token"; the management API takes `ws-` keys there).
    Console access tokens are JWTs and never start with a key's prefix."""
    given = request.headers.get("x-api-key", "").strip()
    if given:
        return given
    token = bearer_token(request)
    return token if token is not None and token.startswith(bearer) else None


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated management caller: the account, and the `ws-` key or the console
    session it came with."""

    account: Account
    key: KeyRecord | None = None
    session_id: str | None = None


async def authenticate(request: Request, session: AsyncSession, settings: Settings) -> Caller:
    """Who is calling: a console access token of a live session of an active account, or a
    usable `ws-` key of an active creator; 401 otherwise. The one check behind `CallerAccount`
    and the idempotency middleware (which must never replay an answer to a caller the route
    would refuse). Seam for OAuth2 access tokens."""
    secret = key_secret(request)
    if secret is not None:
        return await _key_caller(request, session, secret)
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
    if row is None:
        raise AuthenticationError("Session ended; sign in again", reason="session_revoked")
    account: Account = row.Account
    # Before the session: disabling ends every session too, and "sign in again" would not help.
    if account.status != "active":
        raise AuthenticationError("Account is disabled", reason="account_disabled")
    if row.revoked_at is not None:
        raise AuthenticationError("Session ended; sign in again", reason="session_revoked")
    return Caller(account, session_id=claims["sid"])


async def _key_caller(request: Request, session: AsyncSession, secret: str) -> Caller:
    """A `ws-` key acts for its creator, inside its workspace only, with at most its role (the
    workspace dependencies apply both limits)."""
    lookup: KeyLookup = request.app.state.keys
    record = await lookup.key(await session.connection(), secret)
    if record is None or record.kind != "ws":
        raise AuthenticationError(
            "Invalid API key (the management API takes ws- keys)", reason="invalid_api_key"
        )
    check_key(record, now=utcnow(), client_ip=client_ip(request), origin=None)
    account = await session.get(Account, record.account_id) if record.account_id else None
    if account is None or account.status != "active":
        raise AuthenticationError(
            "The creator of this key is no longer an active member of its workspace",
            reason="api_key_orphaned",
        )
    lookup.last_used.touch(record.id)
    return Caller(account, key=record)


# Declared for the OpenAPI document only (`securitySchemes`, and `security` on every route that
# depends on them), so SDK generators add the credentials: `authenticate` and the gateway read the
# headers themselves, and no scheme refuses anything (`auto_error=False`).
CONSOLE_TOKEN = HTTPBearer(
    scheme_name="consoleToken",
    description=(
        "A console access token (`POST /api/v1/auth/login`); where an operation also lists "
        "`workspaceKey`, a `ws-` workspace key may be sent here instead, as "
        "`Authorization: Bearer ws-...`"
    ),
    auto_error=False,
)
WORKSPACE_KEY = APIKeyHeader(
    name="X-Api-Key",
    scheme_name="workspaceKey",
    description=(
        "A `ws-` workspace key: workspace-scoped routes only (account-level routes answer 403 "
        "`workspace_key_not_allowed`)"
    ),
    auto_error=False,
)
ANY_KEY = APIKeyHeader(
    name="X-Api-Key",
    scheme_name="apiKey",
    description="An `app-`, `pk-` or `ws-` key (the gateway and anti-duplicate tokens)",
    auto_error=False,
)


async def _caller_account(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    _token: Annotated[HTTPAuthorizationCredentials | None, Security(CONSOLE_TOKEN)],
    _key: Annotated[str | None, Security(WORKSPACE_KEY)],
) -> Account:
    caller = await authenticate(request, session, settings)
    if caller.key is not None:
        request.state.workspace_key = caller.key
    else:
        request.state.session_id = caller.session_id
    request.state.account_id = caller.account.id
    return caller.account


CallerAccount = Annotated[Account, Depends(_caller_account)]
"""A console session or a `ws-` key: for workspace-scoped routes (through the workspace deps)."""


def refuse_workspace_key(request: Request) -> None:
    """403 `workspace_key_not_allowed` for a request made with a `ws-` key: what only a signed-in
    person may do (account-level routes, and changing who belongs to a workspace)."""
    if workspace_key(request) is not None:
        raise ForbiddenError(
            "This needs a console sign-in; workspace keys act only inside their workspace",
            reason="workspace_key_not_allowed",
        )


async def _current_account(request: Request, account: CallerAccount) -> Account:
    """The signed-in person: account-level routes (`/user/*`, `/workspaces`, `/admin/*`, key
    management) refuse workspace keys, which act only inside their workspace."""
    refuse_workspace_key(request)
    return account


async def _admin_account(account: "CurrentAccount") -> Account:
    if not account.is_admin:
        raise ForbiddenError("Administrator access required", reason="admin_required")
    return account


def refuses_workspace_keys(dependency: object) -> bool:
    """Whether `dependency` answers a `ws-` key 403 `workspace_key_not_allowed`: the OpenAPI
    document lists `workspaceKey` on no route that depends on it (`accounts/openapi.py`)."""
    return dependency is _current_account


CurrentAccount = Annotated[Account, Depends(_current_account)]
AdminAccount = Annotated[Account, Depends(_admin_account)]


def _account_service(
    request: Request, session: SessionDep, settings: SettingsDep
) -> AccountService:
    throttle = LoginThrottle(
        request.app.state.limits_storage,
        settings.login_max_failures,
        settings.login_window_seconds,
        request.app.state.traffic,
    )
    return AccountService(session, settings, throttle)


AccountServiceDep = Annotated[AccountService, Depends(_account_service)]


def _session_service(session: SessionDep, settings: SettingsDep) -> SessionService:
    return SessionService(session, settings)


SessionServiceDep = Annotated[SessionService, Depends(_session_service)]


USER_AGENT_MAX = 255  # the column's size, in characters
# Dropped from a user agent: C0 and C1 controls and DEL (terminal escapes, bell; NUL, which
# PostgreSQL refuses) and the bidirectional embeddings, overrides and isolates that make a
# list show text other than what was sent ("Chrome \u202eexe.txt").
_UNSHOWABLE = dict.fromkeys(
    [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)


def user_agent(request: Request) -> str:
    """The `User-Agent` as the client wrote it: header bytes are UTF-8 in practice (app and
    device names) but reach us decoded as Latin-1, which showed them as mojibake; invalid
    bytes become U+FFFD. Only what is shown is kept, at most `USER_AGENT_MAX` characters."""
    raw = request.headers.get("user-agent", "")[: 4 * USER_AGENT_MAX].encode("latin-1")
    text = raw.decode("utf-8", "replace").translate(_UNSHOWABLE)
    return text[:USER_AGENT_MAX]


CLIENT_IP_MAX = 45  # the column's size, in characters (the longest IPv6 address text)


def sign_in_ip(request: Request) -> str:
    """The client address the sign-in throttle counts and a session records (`X-Forwarded-For`
    only from trusted proxies), cut to the column's size. Sign-in, refresh and the password
    change all use this one: a peer longer than the column (a socket path) counted under
    another key by the password change would have had a failure window of its own."""
    return client_ip(request)[:CLIENT_IP_MAX]


def sign_in_client(request: Request) -> Client:
    """The client a sign-in or refresh is recorded with: its address (`sign_in_ip`) and user
    agent, in the columns' sizes."""
    return Client(ip=sign_in_ip(request), user_agent=user_agent(request))
