"""Stage: end-user token and permission mode (`none`, `simple`, `admin`, `userSystem`).

The end-user token travels in `Authorization: Bearer` when the caller used a key or a signature,
and in `X-End-User-Token` when the caller used a console token (which holds `Authorization`).
A token that is sent is always verified, whether or not the API requires one: a bad token is a
401, never silently ignored. It may be signed with the app's current secret or, while the grace
of a rotation runs, the previous one (`builder/signing.py`). A valid token must also belong to
the call's data partition (its `ws` claim), so one consumer's users cannot act on another
consumer's data of the same app, and must not have been revoked (`jwtRevoke`): issued before its
user's latest revocation in that partition. That is checked on every call, a token remembered by
`VerifiedTokens` included, but looked up only for a token older than the app's latest revocation
of any user (read with its secrets): for every app that never revoked, and every token issued
since, it costs nothing.

Modes (DESIGN.md §4, spec 001): `none` checks nothing more; `simple` needs one of the API's
rights in the token's `rights`; `admin` needs a token with `admin: true` (calls from another
API's `callApi` step never pass through the gateway, which is how they are accepted);
`userSystem` needs one of the API's rights in `UserRight(partition, token.sub, app, target)`, the
target read from an arg, a token claim or a constant.
"""

from collections.abc import Mapping
from typing import Any

import jwt
from sqlalchemy.ext.asyncio import AsyncConnection

from apiforge.builder.signing import SigningSecrets
from apiforge.core.errors import AuthenticationError, ForbiddenError
from apiforge.engine.revocations import RevocationKey
from apiforge.engine.tokens import WORKSPACE_CLAIM, VerifiedTokens, is_revoked
from apiforge.gateway.context import GatewayContext
from apiforge.gateway.stage import GatewayState
from apiforge.rights.store import RightsKey, held_rights
from apiforge.tools.clock import utcnow


def token_from(ctx: GatewayContext) -> str | None:
    """The raw end-user token of the call, None when none was sent."""
    assert ctx.caller is not None
    if ctx.caller.kind == "console":
        raw = (ctx.header("x-end-user-token") or "").strip()
        return raw or None
    header = ctx.header("authorization")
    if header is None or not header.strip():
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "Send the end-user token as `Authorization: Bearer <token>`", reason="invalid_token"
        )
    return token.strip()


def _denied(message: str, reason: str = "insufficient_rights") -> ForbiddenError:
    return ForbiddenError(message, reason=reason)


def target_of(
    spec: Mapping[str, Any] | None, args: Mapping[str, Any], claims: Mapping[str, Any]
) -> str:
    """The `userSystem` target: an arg's value, a token claim's value, or a constant. Strings
    and whole numbers are accepted; anything else, or nothing, is a 403."""
    source = (spec or {}).get("source")
    name = str((spec or {}).get("value") or "")
    if source == "arg":
        value: Any = args.get(name)
    elif source == "token":
        value = claims.get(name)
    elif source == "constant":
        value = name
    else:
        value = None
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a `number` arg is a float: 7 and 7.0 name the same target
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        where = {"arg": "argument", "token": "token claim"}.get(str(source), "target")
        raise _denied(
            f"The permission target ({where} `{name}`) is missing", "permission_target_missing"
        )
    return value


class PermissionStage:
    name = "permissions"

    def __init__(self, state: GatewayState) -> None:
        # Shared with the builder's `app_changed` hook, which forgets a rotated app's secrets.
        self.secrets = state.engine.secrets
        self.revocations = state.engine.revocations  # and the engine's `tokens_revoked`
        self.tokens = VerifiedTokens()

    async def on_request(self, ctx: GatewayContext) -> None:
        assert ctx.compiled is not None
        assert ctx.target is not None
        auth = ctx.compiled.auth
        raw = token_from(ctx)
        if raw is None:
            if auth.get("requireToken") or auth.get("mode", "none") != "none":
                raise AuthenticationError(
                    "This API needs an end-user token", reason="token_required"
                )
            return
        assert ctx.connection is not None
        secrets, claims = await self._verify(ctx.target.id, ctx.connection, raw)
        if claims.get(WORKSPACE_CLAIM) != ctx.partition:
            raise AuthenticationError(
                "This token was issued for another workspace's users",
                reason="token_workspace_mismatch",
            )
        if is_revoked(claims, secrets.revoked_ms):
            # Older than the app's latest revocation: was it its own user's?
            key = RevocationKey(ctx.target.id, ctx.partition, str(claims["sub"]))
            if is_revoked(claims, await self.revocations.get(key, ctx.connection)):
                raise AuthenticationError("This token was revoked", reason="token_revoked")
        await self._check_mode(ctx, auth, claims)
        ctx.token = claims  # only once allowed: steps never see a refused caller's claims

    async def _verify(
        self, app_id: str, connection: AsyncConnection, raw: str
    ) -> tuple[SigningSecrets, dict[str, Any]]:
        """The app's secrets and the token's claims under them. Signed with none of the cached
        ones: read again (`SecretCache.reread`), as another node may have rotated them and
        signed it."""
        secrets = await self.secrets.get(app_id, connection)
        try:
            return secrets, self.tokens.verify_any(secrets.accepted(utcnow), app_id, raw)
        except AuthenticationError as exc:
            if not isinstance(exc.__cause__, jwt.InvalidSignatureError):
                raise
            fresher = await self.secrets.reread(app_id, connection)
            if fresher is None or fresher == secrets:
                raise
            return fresher, self.tokens.verify_any(fresher.accepted(utcnow), app_id, raw)

    async def _check_mode(
        self, ctx: GatewayContext, auth: Mapping[str, Any], claims: Mapping[str, Any]
    ) -> None:
        mode = auth.get("mode", "none")
        wanted = auth.get("rights") or []
        if mode == "none":
            return
        if mode == "simple":
            held = claims.get("rights") or []
            if not any(right in held for right in wanted):
                raise _denied("The token holds none of the rights this API requires")
            return
        if mode == "admin":
            if claims.get("admin") is not True:
                raise _denied("This API is for the app's administrators", "admin_required")
            return
        if mode == "userSystem":
            assert ctx.target is not None
            assert ctx.connection is not None
            target = target_of(auth.get("target"), ctx.args, claims)
            key = RightsKey(ctx.partition, ctx.target.id, str(claims["sub"]), target)
            held = await held_rights(ctx.connection, key) or []
            if not any(right in held for right in wanted):
                raise _denied("The user holds none of the rights this API requires on the target")
            return
        # A mode this build does not know (a newer snapshot): refuse rather than allow.
        raise _denied("This API's permission mode is not supported", "permission_mode_unknown")
