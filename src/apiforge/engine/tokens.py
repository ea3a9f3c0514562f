"""End-user tokens: the HS256 JWTs an app issues with `jwtSign` and the gateway verifies.

Each app signs with its own secret and names itself in `aud`, so a token of one app is refused by
another even if the secrets were ever equal. Verification pins the algorithm (no `alg: none`, no
algorithm confusion), requires `exp`, `sub` and `aud`, and allows no clock leeway.

`iat` carries milliseconds (a JSON number with up to 3 decimals, as RFC 7519's NumericDate
allows): a `jwtRevoke` refuses a user's tokens issued before it, to the millisecond
(`is_revoked`). Tokens issued before this precision have a whole-second `iat`, compared alike.
"""

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
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
# The longest `expiresIn`: also how long a revocation is kept (`revocations.PRUNE_AFTER`).
# Lowering it would prune revocations of tokens still valid under the old bound: keep the old
# one there until they have expired.
MAX_EXPIRES_IN = 365 * 86400
# What `VerifiedTokens` remembers: at most this many tokens, and this many bytes of tokens and
# claims. A `jwtSign` token may be ~30 KB (8 KB of claims, 100 rights of 128 characters), its
# claims ~22 KB more: by count alone, 8,192 of them held ~400 MB; common tokens of under 1 KB
# all fit by count well before the bytes bind.
MAX_CACHED_TOKENS = 8192
MAX_CACHED_TOKEN_BYTES = 32 * 1024 * 1024

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def floor_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, rounded down (a token's `iat`: never later than issued)."""
    return (moment - _EPOCH) // _MS


def ceil_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, rounded up (a revocation: never earlier than it ran, so
    it covers every token issued before it, and at worst one issued less than 1 ms after)."""
    return -((_EPOCH - moment) // _MS)


def from_ms(ms: int) -> datetime:
    return _EPOCH + ms * _MS


def issued_ms(claims: Mapping[str, Any]) -> int:
    """A verified token's `iat` in milliseconds (`verify_end_user_token` checked it is a
    number): rounded to the nearest, as `jwtSign` wrote `ms / 1000`, which a float may hold as a
    hair under it."""
    issued: float = claims["iat"]
    return round(issued * 1000)


def is_revoked(claims: Mapping[str, Any], revoked_ms: int | None) -> bool:
    """The rule: a token is revoked when it was issued strictly before its user's revocation, so
    a token signed in the call that revoked, after the revocation (`iat` = its cutoff), works."""
    return revoked_ms is not None and issued_ms(claims) < revoked_ms


def _numeric_date(ms: int) -> int | float:
    """`ms` as a NumericDate: whole seconds as an integer, else seconds with 3 decimals."""
    seconds, rest = divmod(ms, 1000)
    return seconds if rest == 0 else ms / 1000


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
    issued: int | None = None,
) -> str:
    """Issue a token for one of the app's own users; `claims` must avoid `RESERVED_CLAIMS`.
    `iat` is `now` to the millisecond, or `issued` (milliseconds) when given."""
    clash = RESERVED_CLAIMS.intersection(claims or {})
    if clash:
        raise ValueError(f"custom claims may not set {', '.join(sorted(clash))}")
    payload: dict[str, Any] = {
        **(claims or {}),
        "iss": ISSUER,
        "aud": app_id,
        "sub": sub,
        "iat": _numeric_date(floor_ms(now) if issued is None else issued),
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
    (app, secret) keeps a valid signature until its `exp` — no claim of it can change — so a
    repeat is accepted from memory after checking only `exp` against the clock. (Its user's
    revocation is checked by the caller on every call, remembered or not.) Refused tokens are never
    remembered; a different secret (rotated) is a different key. Bounded by count and by the
    bytes of the tokens and claims held (`bytes`), the least recently used going first."""

    def __init__(self, size: int = MAX_CACHED_TOKENS, max_bytes: int = MAX_CACHED_TOKEN_BYTES):
        self.size = size
        self.max_bytes = max_bytes
        self.bytes = 0
        # (app, secret, token) -> (exp, the claims as JSON: each call gets its own copy)
        self._accepted: OrderedDict[tuple[str, str, str], tuple[float, bytes]] = OrderedDict()

    def verify(self, secret: str, app_id: str, token: str) -> dict[str, Any]:
        key = (app_id, secret, token)
        known = self._accepted.get(key)
        if known is None:
            claims = verify_end_user_token(secret, app_id, token)
            self._remember(key, float(claims.get("exp", 0)), orjson.dumps(claims))
            return claims
        self._accepted.move_to_end(key)
        if known[0] <= time.time():
            self._forget(key)
            raise AuthenticationError("Token expired", reason="token_expired")
        remembered: dict[str, Any] = orjson.loads(known[1])
        return remembered

    def verify_any(self, secrets: Sequence[str], app_id: str, token: str) -> dict[str, Any]:
        """`verify` under whichever of `secrets` signed the token: an app's current secret and,
        while a rotation's grace runs, the previous one. A token remembered under one of them is
        found before any signature is checked; a secret that no longer comes in `secrets` never
        accepts a token, remembered or not. A token none of them signed gets the first one's
        refusal (`invalid_token`)."""
        for secret in secrets:
            if (app_id, secret, token) in self._accepted:
                return self.verify(secret, app_id, token)
        refusal: AuthenticationError | None = None
        for secret in secrets:
            try:
                return self.verify(secret, app_id, token)
            except AuthenticationError as exc:
                if not isinstance(exc.__cause__, jwt.InvalidSignatureError):
                    raise  # signed with this secret, refused for another reason (expired)
                refusal = refusal or exc
        assert refusal is not None, "an app always has a current secret"
        raise refusal

    def _remember(self, key: tuple[str, str, str], exp: float, claims: bytes) -> None:
        accepted = self._accepted
        accepted[key] = (exp, claims)
        self.bytes += _size(key, claims)
        while accepted and (len(accepted) > self.size or self.bytes > self.max_bytes):
            self._forget(next(iter(accepted)))

    def _forget(self, key: tuple[str, str, str]) -> None:
        _exp, claims = self._accepted.pop(key)
        self.bytes -= _size(key, claims)


def _size(key: tuple[str, str, str], claims: bytes) -> int:
    """The bytes an entry holds that a caller chooses: its token and claims (app ids and
    secrets are short, and shared by every token of an app)."""
    return len(key[2]) + len(claims)
