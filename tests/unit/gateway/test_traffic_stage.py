"""The gateway's traffic stage: the counters a call is subject to, built once per caller and API
and reused while the rules cache hands out the same limits; rebuilt the moment they change."""

from typing import Any

from apiforge.core.settings import Settings
from apiforge.engine.loader import AppTarget
from apiforge.gateway.context import Caller, GatewayContext
from apiforge.gateway.stages.traffic import TrafficRelease, TrafficStage
from apiforge.traffic.control import TrafficControl
from apiforge.traffic.rules import ApiLimits, AppLimits, PlanRates
from apiforge.traffic.store import MemoryTraffic


def context(ip: str = "10.0.0.1", key: str = "key1") -> GatewayContext:
    ctx = GatewayContext(headers={}, client_ip=ip, request_id="r", raw_body=b"")
    ctx.connection = object()  # type: ignore[assignment]  # cached rules read nothing
    ctx.target = AppTarget("app1", "builder", {}, "1.0.0", deprecated=False)
    ctx.api = "list"
    ctx.partition = "ws1"
    ctx.caller = Caller("app_key", workspace_id="ws1", key_id=key)
    return ctx


def control(limits: ApiLimits, plan: PlanRates) -> TrafficControl:
    traffic = TrafficControl(Settings(), None)
    traffic.rules.apps.put("app1", AppLimits(default=limits))
    traffic.rules.plans.put("ws1", plan)
    return traffic


async def call(stage: TrafficStage, ctx: GatewayContext) -> dict[str, Any]:
    await stage.on_request(ctx)
    await TrafficRelease(stage.control).after(ctx)
    return dict(ctx.response_headers)


async def test_a_callers_counters_are_built_once_and_rebuilt_when_the_limits_change() -> None:
    traffic = control(ApiLimits(ip_per_minute=50), PlanRates(600, 10))
    stage = TrafficStage(traffic)
    first = await call(stage, context())
    [shape] = stage._shapes.values()
    second = await call(stage, context())
    assert stage._shapes == {("app1", "list", "ws1", "key1", "10.0.0.1"): shape}  # reused
    assert first == second == {"RateLimit-Policy": '"ip";q=50;w=60, "plan";q=600;w=60'}
    store = traffic.store
    assert isinstance(store, MemoryTraffic)
    assert store.windows["ip:app1:list:10.0.0.1"][2] == 2  # both calls counted
    assert store.active == {}  # and their places given back
    # Another IP counts apart; the key does not name any counter here but still keys the shape.
    await call(stage, context(ip="10.0.0.2"))
    assert store.windows["ip:app1:list:10.0.0.2"][2] == 1
    # The plan changes (the rules cache reads a new object): the next call uses it.
    traffic.rules.plans.put("ws1", PlanRates(30, 10))
    headers = await call(stage, context())
    assert headers["RateLimit-Policy"] == '"ip";q=50;w=60, "plan";q=30;w=60'
    assert stage._shapes[("app1", "list", "ws1", "key1", "10.0.0.1")] is not shape


async def test_without_an_ip_limit_the_ip_names_no_shape_and_no_limit_costs_nothing() -> None:
    traffic = control(ApiLimits(key_per_minute=5, concurrent_per_key=(2, "app1")), PlanRates())
    stage = TrafficStage(traffic)
    await call(stage, context(ip="10.0.0.1"))
    await call(stage, context(ip="10.0.0.2"))
    assert list(stage._shapes) == [("app1", "list", "ws1", "key1", "")]
    ctx = context()
    await stage.on_request(ctx)
    assert ctx.lease is not None  # a place held until the after-stage gives it back
    assert traffic.store.active == {"key:app1:key1": 1}  # type: ignore[attr-defined]
    await TrafficRelease(traffic).after(ctx)
    unlimited = TrafficStage(control(ApiLimits(), PlanRates()))
    assert await call(unlimited, context()) == {}
    assert unlimited._shapes  # an empty shape: nothing to count, no header
