"""Stage 5a: frequency limits, before anything costly runs for the call.

Counted, in order: the client IP on this API and the caller key on this API (the app's limits,
`traffic/rules.py`), then the calling workspace's plan (`requestsPerMinute`, all its calls). A
call with no limit configured and an unlimited plan touches no store at all.
"""

from apiforge.gateway.context import GatewayContext
from apiforge.traffic.control import TrafficControl
from apiforge.traffic.frequency import Rate
from apiforge.traffic.headers import policy
from apiforge.traffic.rules import UNLIMITED

WINDOW = 60


def caller_id(ctx: GatewayContext) -> str:
    """The credential a per-key limit counts: the key, or the console account."""
    caller = ctx.caller
    assert caller is not None
    return caller.key_id or f"acct:{caller.account_id}"


class FrequencyStage:
    name = "frequency"

    def __init__(self, control: TrafficControl) -> None:
        self.control = control

    async def on_request(self, ctx: GatewayContext) -> None:
        assert ctx.connection is not None
        assert ctx.target is not None
        rules = self.control.rules
        limits = (await rules.app(ctx.connection, ctx.target.id)).of(ctx.api)
        plan = await rules.plan(ctx.connection, ctx.partition)
        rates: list[Rate] = []
        if limits.ip_per_minute is not None:
            key = f"ip:{ctx.target.id}:{ctx.api}:{ctx.client_ip}"
            rates.append(Rate("ip", key, limits.ip_per_minute, WINDOW))
        if limits.key_per_minute is not None:
            key = f"key:{ctx.target.id}:{ctx.api}:{caller_id(ctx)}"
            rates.append(Rate("key", key, limits.key_per_minute, WINDOW))
        if plan.requests_per_minute != UNLIMITED:
            rates.append(Rate("plan", f"plan:{ctx.partition}", plan.requests_per_minute, WINDOW))
        if not rates:
            return
        ctx.response_headers["RateLimit-Policy"] = policy(rates)
        await self.control.hit(rates)
