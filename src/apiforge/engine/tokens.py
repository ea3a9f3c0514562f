"""End-user tokens: the HS256 JWTs an app issues with `jwtSign` and the gateway verifies.

Each app signs with its own secret and names itself in `aud`, so a token of one app is refused by
another even if the secrets were ever equal. Verification pins the algorithm (no `alg: none`, no
algorithm confusion), requires `exp`, `sub` and `aud`, and allows no clock leeway.
"""

import time
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import jwt
import orjson

from apiforge.core.errors import AuthenticationError
from apiforge.tools.clock import issued_in_time

ISSUER = "apiforge"
ALGORITHM = "HS256"
# The workspace (data partition) the token was issued in: the gateway refuses the token in any
# other partition, so one consumer's users never act on another consumer's data of the same app.
WORKSPACE_CLAIM = "ws"
# Claims the platform sets itself; `jwtSign`'s custom `claims` may not override them.
RESERVED_CLAIMS = frozenset(
    {"iss", "aud", "sub", "exp", "iat", "nbf", "jti", "rights", "admin", WORKSPACE_CLAIM}
)
MAX_EXPIRES_IN = 365 * 86400


def sign_end_user_token(
    secret: str,
    app_id: str,
    *,
    sub: str,
    now: datetime,
    expires_in: int,
    rights: list[str] | None = None,
    admin: bool = False,
    claims: Mapping[str, Any] | None = None,
    workspace: str | None = None,
) -> str:
    """Issue a token for one of the app's own users; `claims` must avoid `RESERVED_CLAIMS`."""
    clash = RESERVED_CLAIMS.intersection(claims or {})
    if clash:
        raise ValueError(f"custom claims may not set {', '.join(sorted(clash))}")
    payload: dict[str, Any] = {
        **(claims or {}),
        "iss": ISSUER,
        "aud": app_id,
        "sub": sub,
        "iat": now,
        "exp": now + timedelta(seconds=expires_in),
        "rights": list(rights or []),
    }
    if admin:
        payload["admin"] = True
    if workspace is not None:
        payload[WORKSPACE_CLAIM] = workspace
    return jwt.encode(payload, secret, algorithm=ALGORITHM)


def verify_end_user_token(secret: str, app_id: str, token: str) -> dict[str, Any]:
    """The claims of a valid token of `app_id`; anything else is a 401 with a stable reason."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=app_id,
            issuer=ISSUER,
            options={
                "require": ["exp", "iat", "sub", "aud", "iss"],
                "strict_aud": True,
                "verify_iat": False,  # `issued_in_time` below allows the nodes' clock skew
            },
        )
    except jwt.ExpiredSignatureError as exc:
        raise AuthenticationError("Token expired", reason="token_expired") from exc
    except jwt.PyJWTError as exc:
        raise AuthenticationError("Invalid token", reason="invalid_token") from exc
    if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("rights", []), list):
        raise AuthenticationError("Invalid token", reason="invalid_token")
    if not issued_in_time(claims):
        raise AuthenticationError("Invalid token", reason="invalid_token")
    return claims


class VerifiedTokens:
    """`verify_end_user_token` with a memory of the tokens it accepted (bounded LRU).

    Checking an HS256 signature costs a call about as much as the rest of the gateway's stages
    together, while a client sends the same token on call after call. A token accepted once for
    (app, secret) stays valid until its `exp` — no claim of it can change — so a repeat is
    accepted from memory after checking only `exp` against the clock. Refused tokens are never
    remembered; a different secret (rotated) is a different key."""

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        # (app, secret, token) -> (exp, the claims as JSON: each call gets its own copy)
        self._accepted: OrderedDict[tuple[str, str, str], tuple[float, bytes]] = OrderedDict()

    def verify(self, secret: str, app_id: str, token: str) -> dict[str, Any]:
        key = (app_id, secret, token)
        known = self._accepted.get(key)
        if known is None:
            claims = verify_end_user_token(secret, app_id, token)
            self._accepted[key] = (float(claims.get("exp", 0)), orjson.dumps(claims))
            if len(self._accepted) > self.size:
                self._accepted.popitem(last=False)
            return claims
        self._accepted.move_to_end(key)
        if known[0] <= time.time():
            del self._accepted[key]
            raise AuthenticationError("Token expired", reason="token_expired")
        remembered: dict[str, Any] = orjson.loads(known[1])
        return remembered
