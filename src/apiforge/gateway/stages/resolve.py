"""Stage: find the app and the version asked for (`dev`, `latest` or `X.Y.Z`).

A missing version is only reported after the policy stage: to a caller who may not see the app,
every miss is the same 404 `app_not_found` (a deprecated version's header waits for it too).
"""

from apiforge.engine.loader import ApiLoader
from apiforge.gateway.context import GatewayContext


class ResolveStage:
    name = "resolve"

    def __init__(self, loader: ApiLoader) -> None:
        self.loader = loader

    async def on_request(self, ctx: GatewayContext) -> None:
        assert ctx.connection is not None
        ctx.target = await self.loader.target(ctx.connection, ctx.app_id, ctx.version)
