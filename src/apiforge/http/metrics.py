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
