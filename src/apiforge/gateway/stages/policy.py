"""Stage: may this caller call this app and API at all? Then load the compiled plan.

Console callers (and workspace keys) must belong to the app's own workspace and call with its
partition; app and publishable keys must be bound to this app and their workspace must have the
app enabled (a subscription). Anything else is the same 404 as an unknown app, so private apps
never leak (a key bound to another app of the caller's own workspace is told so: 403
`key_not_for_app`). `dev` — unpublished, disabled APIs included — is the app's workspace's
own: a subscriber's key finds no such version. A disabled API is 403 `api_disabled` on
published versions. A deprecated version's `Deprecation` header (RFC 9745: `@<unix seconds>` of
the deprecation), its `Link`s (its docs, `rel="deprecation"`; the latest version's,
`rel="successor-version"`) and `Sunset` (RFC 8594, when it has a date) are only sent to callers
who may call it; from its sunset on, they get 410 `version_sunset` before anything is loaded,
run, counted or charged.
"""

from datetime import datetime
from typing import Protocol

from sqlalchemy import select

from apiforge.core.errors import ApiforgeError, ForbiddenError, ValidationError
from apiforge.engine.loader import ApiLoader, AppNotFoundError, AppTarget, VersionNotFoundError
from apiforge.gateway.context import GatewayContext
from apiforge.tools.clock import iso, utcnow
from apiforge.workspaces.models import Membership


class VersionSunsetError(ApiforgeError):
    status = 410
    reason = "version_sunset"
    message = "This version has reached its sunset date; call a newer version"


def _deprecation(ctx: GatewayContext, target: AppTarget) -> None:
    """The headers of a deprecated version, formatted when the target was read."""
    ctx.response_headers["Deprecation"] = target.deprecation_header
    ctx.response_headers["Link"] = target.link_header
    if target.sunset is not None:
        ctx.response_headers["Sunset"] = target.sunset_header


def _gone(ctx: GatewayContext, target: AppTarget, sunset: datetime) -> VersionSunsetError:
    """The 410 of a version past its sunset, with the headers that said it was coming."""
    _deprecation(ctx, target)
    return VersionSunsetError(details={"version": target.version, "sunset": iso(sunset)})


class SubscriptionChecker(Protocol):
    async def is_enabled(self, ctx: GatewayContext, workspace_id: str, app_id: str) -> bool:
        """Whether `workspace_id` has `app_id` enabled now (cached at most briefly)."""
        ...


class PolicyStage:
    name = "policy"

    def __init__(self, loader: ApiLoader, subscriptions: SubscriptionChecker | None) -> None:
        self.loader = loader
        self.subscriptions = subscriptions

    async def on_request(self, ctx: GatewayContext) -> None:
        assert ctx.caller is not None
        assert ctx.target is not None
        assert ctx.connection is not None
        caller, target = ctx.caller, ctx.target
        if caller.kind == "console":
            role = await ctx.connection.scalar(
                select(Membership.role).where(
                    Membership.workspace_id == target.workspace_id,
                    Membership.account_id == caller.account_id,
                )
            )
            if role is None:
                raise AppNotFoundError()
            caller.workspace_id = target.workspace_id
        elif caller.kind == "workspace_key":
            if caller.workspace_id != target.workspace_id:
                raise AppNotFoundError()
        else:
            own = caller.workspace_id == target.workspace_id
            if caller.app_id is not None and caller.app_id != target.id:
                if not own and not await self._enabled(ctx, caller.workspace_id, target.id):
                    raise AppNotFoundError()  # it may be private: no clue it exists
                raise ForbiddenError("This key is for another app", reason="key_not_for_app")
            if caller.workspace_id is None or self.subscriptions is None:
                raise AppNotFoundError()
            if not await self.subscriptions.is_enabled(ctx, caller.workspace_id, target.id):
                raise ForbiddenError(
                    "The app is not enabled for this workspace", reason="app_not_enabled"
                )
            if ctx.debug:
                raise ForbiddenError(
                    "Debug traces are for the app's members", reason="debug_forbidden"
                )
            if target.version == "dev" and not own:
                raise VersionNotFoundError("The app has no version dev for subscribers")
        ctx.partition = caller.workspace_id or target.workspace_id
        if target.version is None:
            label = "published version" if ctx.version == "latest" else f"version {ctx.version}"
            raise VersionNotFoundError(f"The app has no {label}")
        if ctx.debug and target.version != "dev":
            raise ValidationError(
                "A debug trace is only available on the dev version",
                reason="debug_dev_only",
                errors=[{"field": "debug", "message": "only with version dev"}],
            )
        # The one per-call cost of sunsets: a clock read, only for versions that have one.
        sunset = target.sunset
        if sunset is not None and utcnow() >= sunset:
            raise _gone(ctx, target, sunset)
        compiled = await self.loader.load(ctx.connection, target, ctx.api)
        if not compiled.enabled and target.version != "dev":
            raise ForbiddenError("This API is disabled", reason="api_disabled")
        if target.deprecated:
            _deprecation(ctx, target)
        ctx.compiled = compiled

    async def _enabled(self, ctx: GatewayContext, workspace_id: str | None, app_id: str) -> bool:
        """Whether the calling workspace has `app_id` enabled: then the app is no secret to it,
        and a key of another app is told so rather than that the app does not exist."""
        if workspace_id is None or self.subscriptions is None:
            return False
        return await self.subscriptions.is_enabled(ctx, workspace_id, app_id)
