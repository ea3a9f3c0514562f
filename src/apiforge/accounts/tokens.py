"""Console access tokens: short-lived HS256 JWTs naming the account and its login session."""

from datetime import datetime, timedelta
from typing import Any

import jwt

from apiforge.core.errors import AuthenticationError
from apiforge.core.settings import Settings
from apiforge.tools.clock import issued_in_time, utcnow

ISSUER = "apiforge"
AUDIENCE = "apiforge-console"


def issue_access_token(
    settings: Settings, account_id: str, session_id: str, expires: datetime | None = None
) -> str:
    """Valid until `expires` (default: `APIFORGE_ACCESS_TOKEN_TTL` from now); the caller passes
    the session's end when that comes sooner, so a token never outlives its session's maximum
    lifetime (`exp` is whole seconds, rounded down)."""
    now = utcnow()
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": account_id,
        "sid": session_id,
        "iat": now,
        "exp": now + timedelta(seconds=settings.access_token_ttl) if expires is None else expires,
    }
    return jwt.encode(claims, settings.signing_key, algorithm="HS256")


def decode_access_token(settings: Settings, token: str) -> dict[str, Any]:
    """Verify signature, expiry, issuer and audience; any failure is a plain 401."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            settings.signing_key,
            algorithms=["HS256"],
            audience=AUDIENCE,
            issuer=ISSUER,
            # `issued_in_time` below allows the nodes' clock skew (a sign-in on one node, the
            # next request on another whose clock is a second behind).
            options={"require": ["exp", "iat", "sub", "sid"], "verify_iat": False},
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthenticationError("Access token expired", reason="token_expired") from exc
    except jwt.PyJWTError as exc:
        raise AuthenticationError("Invalid access token", reason="invalid_token") from exc
    # Ids are strings: any other `sub`/`sid` (a list, from a token minted elsewhere with this
    # key) would reach the session lookup as a parameter no driver binds (a 500).
    if not (isinstance(claims["sub"], str) and isinstance(claims["sid"], str)):
        raise AuthenticationError("Invalid access token", reason="invalid_token")
    if not issued_in_time(claims):
        raise AuthenticationError("Invalid access token", reason="invalid_token")
    return claims
