"""Stage 5: traffic control — frequency and concurrency limits, admitted in one operation.

Frequency (calls per minute): the client IP (an IPv6 client's /64) on this API and the caller
key on this API (the app's limits, `traffic/rules.py`), then the calling workspace's plan
(`requestsPerMinute`).
Concurrency (calls in flight): the caller key and all callers together (the app's limits,
app-wide or per API), and the calling workspace's plan (`concurrentRequests`). A refused call
counts in no window and holds no place; an admitted one holds its places until
`TrafficRelease` gives them back after the call, refused later or not, client gone or not.
"""

from dataclasses import dataclass

from apiforge.gateway.context import GatewayContext
from apiforge.plans.meter import QuotaMeter
from apiforge.plans.quotas import QuotaExceededError
from apiforge.tools.netpolicy import limit_group
from apiforge.traffic.concurrency import Slot, new_member
from apiforge.traffic.control import TrafficControl
from apiforge.traffic.frequency import Rate
from apiforge.traffic.headers import policy
from apiforge.traffic.rules import UNLIMITED, ApiLimits, PlanRates

WINDOW = 60
MAX_SHAPES = 10_000


class TrafficStage:
    name = "traffic"

    def __init__(self, control: TrafficControl, meter: QuotaMeter | None = None) -> None:
        self.control = control
        self.meter = meter  # notes a closed plan's refusals in the quota-hit log
        # The rates and places of a caller on an API, with their `RateLimit-Policy`, as last
        # built from the app's limits and the plan's rates: reused while the rules cache hands
        # out the same objects (read again at most every few seconds), so most calls build
        # nothing. Keyed by everything a counter's name holds.
        self._shapes: dict[tuple[str, ...], _Shape] = {}

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
        # An IPv6 client counts by its /64: it owns all of it and could rotate through it.
        ip = limit_group(ctx.client_ip) if limits.ip_per_minute is not None else ""
        key = (app_id, api, workspace, caller_id, ip)
        shape = self._shapes.get(key)
        if shape is None or shape.limits is not limits or shape.plan is not plan:
            shape = _shape(limits, plan, app_id, api, workspace, caller_id, ip)
            if len(self._shapes) >= MAX_SHAPES:
                self._shapes.clear()  # callers and IPs come and go: start afresh
            self._shapes[key] = shape
        if shape.closed:
            # A plan that allows no calls: retrying later never helps, so not a 429.
            if self.meter is not None:
                await self.meter.refuse_closed(ctx.connection, workspace, shape.closed)
            raise QuotaExceededError(shape.closed, 0, 0)
        rates, slots = shape.rates, shape.slots
        if not rates and not slots:
            return
        if shape.policy:
            ctx.response_headers["RateLimit-Policy"] = shape.policy
        # A lease id names the call's places in Redis; in process a place is only a count.
        member = new_member() if self.control.store.shared else ""
        if await self.control.admit(rates, slots, member) and slots:
            ctx.lease = (slots, member)


@dataclass(frozen=True, slots=True)
class _Shape:
    limits: ApiLimits
    plan: PlanRates
    rates: tuple[Rate, ...]
    slots: tuple[Slot, ...]
    policy: str
    closed: str = ""  # the plan quota that allows no calls at all (0), if any


def _shape(
    limits: ApiLimits,
    plan: PlanRates,
    app_id: str,
    api: str,
    workspace: str,
    caller_id: str,
    ip: str,
) -> _Shape:
    """The counters a call of `caller_id` (from `ip`) on `api` is subject to."""
    rates: list[Rate] = []
    if limits.ip_per_minute is not None:
        rates.append(Rate("ip", f"ip:{app_id}:{api}:{ip}", limits.ip_per_minute, WINDOW))
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
    closed = (
        "requestsPerMinute"
        if plan.requests_per_minute == 0
        else "concurrentRequests"
        if plan.concurrent == 0
        else ""
    )
    return _Shape(limits, plan, tuple(rates), tuple(slots), policy(rates) if rates else "", closed)


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
