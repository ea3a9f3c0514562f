"""Stage 5: traffic control — frequency and concurrency limits, admitted in one operation.

Frequency (calls per minute): the client IP on this API and the caller key on this API (the
app's limits, `traffic/rules.py`), then the calling workspace's plan (`requestsPerMinute`).
Concurrency (calls in flight): the caller key and all callers together (the app's limits,
app-wide or per API), and the calling workspace's plan (`concurrentRequests`). A refused call
counts in no window and holds no place; an admitted one holds its places until
`TrafficRelease` gives them back after the call, refused later or not, client gone or not.
"""

from apiforge.gateway.context import GatewayContext
from apiforge.traffic.concurrency import Slot, new_member
from apiforge.traffic.control import TrafficControl
from apiforge.traffic.frequency import Rate
from apiforge.traffic.headers import policy
from apiforge.traffic.rules import UNLIMITED

WINDOW = 60


class TrafficStage:
    name = "traffic"

    def __init__(self, control: TrafficControl) -> None:
        self.control = control

    async def on_request(self, ctx: GatewayContext) -> None:
        assert ctx.connection is not None
        assert ctx.target is not None
        caller = ctx.caller
        assert caller is not None
        rules = self.control.rules
        app_id, api, workspace = ctx.target.id, ctx.api, ctx.partition
        limits = (await rules.app(ctx.connection, app_id)).of(api)
        plan = await rules.plan(ctx.connection, workspace)
        caller_id = caller.key_id or f"acct:{caller.account_id}"
        rates: list[Rate] = []
        if limits.ip_per_minute is not None:
            key = f"ip:{app_id}:{api}:{ctx.client_ip}"
            rates.append(Rate("ip", key, limits.ip_per_minute, WINDOW))
        if limits.key_per_minute is not None:
            key = f"key:{app_id}:{api}:{caller_id}"
            rates.append(Rate("key", key, limits.key_per_minute, WINDOW))
        if plan.requests_per_minute != UNLIMITED:
            rates.append(Rate("plan", f"plan:{workspace}", plan.requests_per_minute, WINDOW))
        slots: list[Slot] = []
        if limits.concurrent_per_key is not None:
            limit, counter = limits.concurrent_per_key
            slots.append(Slot("key", f"key:{counter}:{caller_id}", limit))
        if limits.concurrent is not None:
            limit, counter = limits.concurrent
            slots.append(Slot("app", f"app:{counter}", limit))
        if plan.concurrent != UNLIMITED:
            slots.append(Slot("plan", f"plan:{workspace}", plan.concurrent))
        if not rates and not slots:
            return
        if rates:
            ctx.response_headers["RateLimit-Policy"] = policy(rates)
        member = new_member()
        if await self.control.admit(rates, slots, member) and slots:
            ctx.lease = (slots, member)


class TrafficRelease:
    """After stage, first of them: the call's concurrency places go back as soon as it ends."""

    name = "traffic_release"

    def __init__(self, control: TrafficControl) -> None:
        self.control = control

    async def after(self, ctx: GatewayContext) -> None:
        lease = ctx.lease
        if lease is not None:
            ctx.lease = None
            await self.control.release(*lease)
