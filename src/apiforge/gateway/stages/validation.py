"""Stage: `args` against the API's compiled params (400 `Missing required parameters`, fields)."""

from apiforge.gateway.context import GatewayContext


class ValidationStage:
    name = "validation"

    async def on_request(self, ctx: GatewayContext) -> None:
        assert ctx.compiled is not None
        ctx.args = ctx.compiled.validate_args(ctx.args)
