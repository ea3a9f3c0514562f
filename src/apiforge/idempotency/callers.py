"""Who is calling, as idempotency scopes it: resolved from the credential headers alone.

The management middleware runs before FastAPI authenticates the request, so it identifies the
caller the same way the auth dependencies will — a verified console token's account, or a `ws-`
key's id — without deciding anything: a request whose credentials don't check out is passed on
untouched and refused (401) by the route, and never reaches the store.
"""

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.accounts.tokens import decode_access_token
from apiforge.core.errors import ApiforgeError
from apiforge.core.settings import Settings
from apiforge.idempotency.keys import principal
from apiforge.keys.lookup import KeyLookup


@dataclass(frozen=True, slots=True)
class CallerScope:
    principal: str  # key:<id> | acct:<id>
    workspace: str  # the workspace acted in ("" = the account's personal one)


def key_secret(headers: dict[str, str]) -> str | None:
    """A key in `X-Api-Key`, or `Authorization: Bearer <key>`; never a console JWT."""
    given = headers.get("x-api-key", "").strip()
    if given:
        return given
    scheme, _, token = headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token[:3] in ("ws-", "app", "pk-"):
        return token
    return None


async def management_caller(
    settings: Settings, lookup: KeyLookup, conn: AsyncConnection, headers: dict[str, str]
) -> CallerScope | None:
    """The caller of a management request, or None when its credentials don't identify one."""
    secret = key_secret(headers)
    if secret is not None:
        record = await lookup.key(conn, secret)
        if record is None or record.kind != "ws":
            return None
        return CallerScope(f"key:{record.id}", record.workspace_id)
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        claims = decode_access_token(settings, token.strip())
    except ApiforgeError:
        return None
    who = principal(None, str(claims["sub"]))
    assert who is not None
    return CallerScope(who, headers.get("x-workspace-id", "").strip())
