"""Gateway side of the keys domain: `X-Api-Key` callers, subscriptions, publishable-key scope.

Every read goes through the process's `KeyLookup` (`keys/lookup.py`, at most one second old), so
a call costs no key or subscription query while a revoked key, an expired key or a disabled
subscription still stops working within a second on every node. Keys are checked against the
resolved client address (`ctx.client_ip`, trusted proxies applied) and, for publishable keys, the
page's `Origin`.
"""

from apiforge.core.errors import AuthenticationError, ForbiddenError
from apiforge.gateway.context import Caller, GatewayContext
from apiforge.gateway.stage import GatewayState
from apiforge.keys.lookup import KeyLookup
from apiforge.keys.policy import KeyRecord, check_key
from apiforge.tools.clock import utcnow

CALLER_KINDS = {"app": "app_key", "pk": "publishable_key", "ws": "workspace_key"}
# Keys that may sign calls (gateway/signing.py): the secret ones; a pk- key is public by design.
SIGNING_KINDS = frozenset({"app", "ws"})


# What a browser's script may read of an answer besides the CORS-safelisted headers: the
# request id, the replay mark of an idempotency key, the limits' headers, deprecation notices.
EXPOSED_HEADERS = ", ".join(
    (
        "X-Request-ID",
        "Idempotent-Replayed",
        "Retry-After",
        "RateLimit",
        "RateLimit-Policy",
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "Deprecation",
        "Sunset",
        "Link",
    )
)


def key_lookup(state: GatewayState) -> KeyLookup:
    """The process's lookup, put in `state.extra["keys"]` by `app.py`."""
    lookup: KeyLookup = state.extra["keys"]
    return lookup


def key_caller(record: KeyRecord, ctx: GatewayContext) -> Caller:
    """The caller a key stands for, after its own policy (revoked, expired, orphaned, IPs,
    origin); raises the refusal."""
    origin = ctx.header("origin")
    check_key(record, now=utcnow(), client_ip=ctx.client_ip, origin=origin)
    if record.kind == "pk" and origin:
        # The browser may read the answer only because the key allows this origin.
        ctx.response_headers["Access-Control-Allow-Origin"] = origin
        ctx.response_headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
        ctx.response_headers["Vary"] = "Origin"
    return Caller(
        kind=CALLER_KINDS[record.kind],
        workspace_id=record.workspace_id,
        account_id=record.account_id if record.kind == "ws" else None,
        key_id=record.id,
        app_id=record.app_id,
        role=record.role,
        allowed_origins=tuple(sorted(record.allowed_origins)),
    )


class ApiKeyResolver:
    """`X-Api-Key: app-…|pk-…|ws-…`. An unknown key is 401 `invalid_api_key`."""

    def __init__(self, state: GatewayState) -> None:
        self.lookup = key_lookup(state)

    async def resolve(self, ctx: GatewayContext) -> Caller | None:
        secret = (ctx.header("x-api-key") or "").strip()
        if not secret:
            return None
        assert ctx.connection is not None
        record = await self.lookup.key(ctx.connection, secret)
        if record is None:
            raise AuthenticationError("Invalid API key", reason="invalid_api_key")
        caller = key_caller(record, ctx)
        self.lookup.last_used.touch(record.id)
        return caller


class SubscriptionCache:
    """`PolicyStage`'s subscription check, from the lookup's one-second cache."""

    def __init__(self, state: GatewayState) -> None:
        self.lookup = key_lookup(state)

    async def is_enabled(self, ctx: GatewayContext, workspace_id: str, app_id: str) -> bool:
        assert ctx.connection is not None
        return await self.lookup.subscription_enabled(ctx.connection, workspace_id, app_id)


class PublishableKeyStage:
    """Stage: a publishable key is public (it ships in web pages), so it may only call APIs that
    need an end-user token or that the builder marked `public` (`auth.public`)."""

    name = "key_scope"

    async def on_request(self, ctx: GatewayContext) -> None:
        assert ctx.caller is not None
        if ctx.caller.kind != "publishable_key":
            return
        assert ctx.compiled is not None
        auth = ctx.compiled.auth
        if not (auth.get("requireToken") or auth.get("public")):
            raise ForbiddenError(
                "Publishable keys may only call APIs that require an end-user token or are public",
                reason="publishable_key_not_allowed",
            )
