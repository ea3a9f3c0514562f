"""`GET /api/v1/idempotency-tokens`: one-time anti-duplicate tokens (spec 003 §4.6.3)."""

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials

from apiforge.accounts.deps import ANY_KEY, CONSOLE_TOKEN, authenticate, key_secret
from apiforge.core.errors import AuthenticationError
from apiforge.http.deps import SessionDep, SettingsDep, client_ip
from apiforge.http.envelope import Envelope, ok
from apiforge.idempotency.schemas import IdempotencyTokenRead
from apiforge.idempotency.service import IdempotencyTokenService
from apiforge.idempotency.store import shared_store
from apiforge.keys.lookup import KeyLookup
from apiforge.keys.policy import check_key
from apiforge.tools.clock import utcnow
from apiforge.traffic.deps import token_issue_limiter

router = APIRouter(prefix="/api/v1", tags=["idempotency"])


async def _key_principal(request: Request, session: SessionDep) -> str | None:
    """`key:<id>` for any key (app-, pk-, ws-): gateway callers need tokens too."""
    secret = key_secret(request, ("ws-", "app-", "pk-"))
    if secret is None:
        return None
    lookup: KeyLookup = request.app.state.keys
    record = await lookup.key(await session.connection(), secret)
    if record is None:
        raise AuthenticationError("Invalid API key", reason="invalid_api_key")
    check_key(
        record, now=utcnow(), client_ip=client_ip(request), origin=request.headers.get("origin")
    )
    return f"key:{record.id}"


async def _principal(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    key: Annotated[str | None, Depends(_key_principal)],
    # Documented credentials (accounts/deps.py): a key, or a console sign-in.
    _key: Annotated[str | None, Security(ANY_KEY)],
    _token: Annotated[HTTPAuthorizationCredentials | None, Security(CONSOLE_TOKEN)],
) -> str:
    if key is not None:
        return key
    # A console sign-in: the same checks (session live, account active) as every other route.
    caller = await authenticate(request, session, settings)
    return f"acct:{caller.account.id}"


def _service(
    request: Request, session: SessionDep, settings: SettingsDep
) -> IdempotencyTokenService:
    state = request.app.state
    return IdempotencyTokenService(
        session, shared_store(state.gateway_state.extra, settings, state.redis)
    )


@router.get(
    "/idempotency-tokens",
    summary="Issue a one-time anti-duplicate token for X-Idempotency-Token",
    description="At most `APIFORGE_IDEMPOTENCY_TOKENS_PER_MINUTE` (600) a minute per caller "
    "(429 `too_many_requests` with the rate-limit headers beyond).",
)
async def issue_token(
    request: Request,
    principal: Annotated[str, Depends(_principal)],
    service: Annotated[IdempotencyTokenService, Depends(_service)],
) -> Envelope[IdempotencyTokenRead]:
    await token_issue_limiter(request, principal)()
    return ok(await service.issue(principal))
