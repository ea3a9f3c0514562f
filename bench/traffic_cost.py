"""What the traffic stage costs a gateway call: the stage and its release, driven directly with a
call context whose app limits and plan rates are cached (as they are on every call but the first
in 2 s), for three configurations — an unlimited plan and no app limits (nothing to count), the
plan's limits only (one rate and one slot: every call of a workspace on a limited plan), and every
app limit too (three rates, three slots). Limits sit far above the load, so no call is refused:
what is measured is counting and releasing. `make bench`'s stage profile shows the same stage
inside whole calls.

Without `--redis` the counters are in process (the embedded default); with `--redis URL` they are
in that Redis (one script per call; the release rides with the next call's script).

    .venv/bin/python bench/traffic_cost.py [--calls 20000] [--redis redis://127.0.0.1:6379/0]
"""

import argparse
import secrets
import statistics
import time
from types import SimpleNamespace
from typing import Any

import uvloop

from apiforge.core.settings import Settings
from apiforge.core.shared import make_redis
from apiforge.gateway.context import Caller, GatewayContext
from apiforge.gateway.stages.traffic import TrafficRelease, TrafficStage
from apiforge.traffic.control import TrafficControl
from apiforge.traffic.rules import NO_APP_LIMITS, PlanRates, resolve

HIGH = 10**6
CONFIGURATIONS: list[tuple[str, dict[str, Any] | None, PlanRates]] = [
    ("nothing to count", None, PlanRates()),
    ("plan limits", None, PlanRates(requests_per_minute=10**9, concurrent=1000)),
    (
        "all limits",
        {"ipPerMinute": HIGH, "keyPerMinute": HIGH, "concurrentPerKey": 1000, "concurrent": 1000},
        PlanRates(requests_per_minute=10**9, concurrent=1000),
    ),
]


def _context() -> GatewayContext:
    ctx = GatewayContext(headers={}, client_ip="203.0.113.7", request_id="r", raw_body=b"")
    ctx.connection = object()  # type: ignore[assignment]  # cached rules never read it
    ctx.target = SimpleNamespace(id="app1")  # type: ignore[assignment]
    ctx.api = "listPosts"
    ctx.caller = Caller(kind="app_key", workspace_id="ws1", key_id="key1")
    ctx.partition = "ws1"
    return ctx


async def measure(settings: Settings, calls: int) -> None:
    print(f"counters: {'Redis ' + settings.redis_url if settings.redis_url else 'in process'}")
    for label, document, plan in CONFIGURATIONS:
        redis = make_redis(settings)
        control = TrafficControl(settings, redis)
        for cache in (control.rules.apps, control.rules.plans):
            cache.ttl = 10.0**9  # cached for the whole run, as between re-reads on a server
        control.rules.apps.put("app1", resolve("app1", document) if document else NO_APP_LIMITS)
        control.rules.plans.put("ws1", plan)
        stage, release = TrafficStage(control), TrafficRelease(control)
        samples = []
        for _ in range(5):  # the first block warms up; the median of the others is reported
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(calls // 5):
                ctx = _context()
                await stage.on_request(ctx)
                await release.after(ctx)
            samples.append(
                (
                    (time.process_time() - cpu) / (calls // 5),
                    (time.perf_counter() - wall) / (calls // 5),
                )
            )
        cpu_us = statistics.median(s[0] for s in samples[1:]) * 1e6
        wall_us = statistics.median(s[1] for s in samples[1:]) * 1e6
        print(
            f"  {label:17} {cpu_us:7.1f} us CPU, {wall_us:7.1f} us wall per call (stage + release)"
        )
        await control.close()
        if redis is not None:
            await redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--redis", default=None, help="redis:// URL (default: in process)")
    args = parser.parse_args()
    prefix = f"bench-traffic-{secrets.token_hex(4)}:"  # keys expire with their windows and leases
    uvloop.run(measure(Settings(redis_url=args.redis, redis_prefix=prefix), args.calls))
