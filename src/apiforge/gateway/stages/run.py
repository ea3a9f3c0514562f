"""Stage: run the steps in the call's transaction and commit; the envelope is built once here."""

from apiforge.builder.env import runtime_env
from apiforge.core.errors import ApiforgeError
from apiforge.core.lazydb import LazyConnection
from apiforge.engine.base import RunContext
from apiforge.engine.runtime import execute
from apiforge.engine.service import EngineState, debug_body, envelope, trace_of
from apiforge.gateway.context import GatewayContext
from apiforge.tools.clock import utcnow


class RunStage:
    name = "run"

    def __init__(self, engine: EngineState) -> None:
        self.engine = engine

    async def on_request(self, ctx: GatewayContext) -> None:
        assert ctx.compiled is not None
        assert ctx.target is not None
        assert ctx.connection is not None
        assert ctx.caller is not None
        run = RunContext(
            app_id=ctx.target.id,
            builder_workspace_id=ctx.target.workspace_id,
            partition=ctx.partition,
            version=ctx.target.version or "dev",
            args=ctx.args,
            token=ctx.token,
            env=runtime_env(self.engine.settings, ctx.target.env),
            now=utcnow(),
            connection=ctx.connection,
            services=self.engine.services,
            limits=self.engine.limits,
            trace=[] if ctx.debug else None,
            api=ctx.api,
        )
        if isinstance(ctx.connection, LazyConnection):
            await ctx.connection.let_go()  # the stages' reads on cache misses are done
        try:
            result = await execute(ctx.compiled, run)
        except ApiforgeError as exc:
            if run.trace is not None:
                exc.details["trace"] = trace_of(ctx.compiled, run)
            raise
        # The body first: a settle step may store it (idempotency) with the call's effects.
        if run.trace is None:
            ctx.body = envelope(result.body)
        else:
            ctx.body = envelope(debug_body(result, trace_of(ctx.compiled, run)))
        for settle in ctx.settle:
            await settle(ctx)
        await ctx.connection.commit()
