"""Prometheus metrics shared by both edges; `/metrics` renders the default registry."""

from prometheus_client import Counter, Histogram

REQUESTS = Counter("apiforge_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "apiforge_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    REQUESTS.labels(method, route, str(status)).inc()
    LATENCY.labels(method, route).observe(seconds)


# Traffic control (traffic/): calls refused by a limit, by limit kind (frequency, concurrency,
# login, key_creation) and scope (ip, key, app, plan, ...).
LIMIT_REJECTIONS = Counter(
    "apiforge_limit_rejections_total", "Requests refused by a traffic limit", ["kind", "scope"]
)
# Decisions a limit took without its shared store (Redis unreachable): mode open or closed.
LIMIT_DEGRADED = Counter(
    "apiforge_limit_degraded_total",
    "Limit checks taken without their store (Redis unreachable), by failure mode",
    ["kind", "mode"],
)
# Responses replayed from an idempotency record instead of running again (by edge: gateway or
# management); incremented by the idempotency feature.
IDEMPOTENT_REPLAYS = Counter(
    "apiforge_idempotent_replays_total",
    "Responses replayed for a repeated idempotency key",
    ["edge"],
)
