"""Stage 5b: concurrency limits — a place in each counter for as long as the call runs.

Counters: the caller key and all callers together (the app's limits, app-wide or per API), and
the calling workspace's plan (`concurrentRequests`). `ConcurrencyRelease` gives the places back
after every call, refused or not, including when the client went away mid-call.
"""

from apiforge.gateway.context import GatewayContext
from apiforge.gateway.stages.frequency import caller_id
from apiforge.traffic.concurrency import Slot, new_member
from apiforge.traffic.control import TrafficControl
from apiforge.traffic.rules import UNLIMITED


class ConcurrencyStage:
    name = "concurrency"

    def __init__(self, control: TrafficControl) -> None:
        self.control = control

    async def on_request(self, ctx: GatewayContext) -> None:
        assert ctx.connection is not None
        assert ctx.target is not None
        rules = self.control.rules
        limits = (await rules.app(ctx.connection, ctx.target.id)).of(ctx.api)
        plan = await rules.plan(ctx.connection, ctx.partition)
        slots: list[Slot] = []
        if limits.concurrent_per_key is not None:
            limit, counter = limits.concurrent_per_key
            slots.append(Slot("key", f"key:{counter}:{caller_id(ctx)}", limit))
        if limits.concurrent is not None:
            limit, counter = limits.concurrent
            slots.append(Slot("app", f"app:{counter}", limit))
        if plan.concurrent != UNLIMITED:
            slots.append(Slot("plan", f"plan:{ctx.partition}", plan.concurrent))
        if not slots:
            return
        member = new_member()
        if await self.control.acquire(slots, member):
            ctx.lease = (slots, member)


class ConcurrencyRelease:
    """After stage: runs in the endpoint's `finally`, first of the after stages."""

    name = "concurrency_release"

    def __init__(self, control: TrafficControl) -> None:
        self.control = control

    async def after(self, ctx: GatewayContext) -> None:
        lease = ctx.lease
        if lease is not None:
            ctx.lease = None
            await self.control.release(*lease)
