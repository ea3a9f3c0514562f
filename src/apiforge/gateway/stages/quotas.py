"""Stage: the calling workspace's `callsPerMonth` quota (403 `quota_exceeded`), in memory.

The check reads the process's quota meter (`plans/meter.py`): cached plan limits and a monthly
count kept from the request log plus this process's own successful calls, so a call costs a few
dict lookups and no database round trip (only a workspace's first call in a process loads its
plan and count, on the call's connection). An unlimited plan (`-1`) skips the count entirely.
A refusal is noted in the quota-hit log in memory (one row per workspace and minute). Calls
admitted and still running count as used until they end, so concurrent calls with M calls left
let exactly M through in a process.
"""

from apiforge.gateway.context import GatewayContext
from apiforge.gateway.stage import GatewayState
from apiforge.plans.meter import quota_meter


class QuotaStage:
    name = "quotas"

    def __init__(self, state: GatewayState) -> None:
        self.meter = quota_meter(state.db)
        self.meter.usage_ttl = state.settings.quota_refresh_seconds

    async def on_request(self, ctx: GatewayContext) -> None:
        caller = ctx.caller
        if caller is None or caller.workspace_id is None or ctx.connection is None:
            return
        ctx.quota_held = await self.meter.check_call(ctx.connection, caller.workspace_id)

    async def after(self, ctx: GatewayContext) -> None:
        """Count a successful call (what `callsPerMonth` counts) and give back the place the call
        held while it ran; never raises."""
        caller = ctx.caller
        if caller is None or caller.workspace_id is None:
            return
        succeeded = 200 <= ctx.status < 300
        if ctx.quota_held is not None:
            month, ctx.quota_held = ctx.quota_held, None
            self.meter.end_call(caller.workspace_id, succeeded, month)
        elif succeeded:
            self.meter.count_call(caller.workspace_id)
