"""Prometheus metrics shared by both edges; `/metrics` renders them (`render`).

One process (the default) keeps every figure in memory and renders the default registry. Under
`apiforge serve --workers N` the parent sets `PROMETHEUS_MULTIPROC_DIR` to a directory of its own
before the workers start (cli.py), so prometheus-client keeps each worker's figures in files there,
and a scrape, whichever worker answers it, adds up the files of all of them (exited workers'
included: a counter never goes back). Every metric here is a counter or a histogram; a gauge would
need its `multiprocess_mode` chosen (`livesum`, `max`, ...).
"""

import os
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

# Read once, as prometheus-client does when it is first imported: the two always agree.
_MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _scrape_registry() -> CollectorRegistry:
    """Several workers: a registry with only the collector of the workers' files (the per-process
    `process_*` and `python_gc_*` figures of whichever worker answered would mislead)."""
    if _MULTIPROCESS_DIR is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, _MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    return registry


_SCRAPED = _scrape_registry()


def render() -> bytes:
    """The Prometheus text of the whole server (every worker of it)."""
    return generate_latest(_SCRAPED)


def worker_exiting() -> None:
    """Drop this worker's `live*` gauge files (a counter's stay counted); no-op in one process."""
    if _MULTIPROCESS_DIR is not None:
        mark_process_dead(os.getpid(), _MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]


REQUESTS = Counter("apiforge_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "apiforge_http_request_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


# RFC 9110's methods. A server passes any token a client sends as the method (`FOO`, `GET2`, ...):
# those are counted as `other`, or every new token would mint series in every scrape for good.
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)

# (method, route, status) -> its counter and histogram children: `labels()` costs a lock and a
# tuple of strings per call, twice per request. Bounded, as label values should be.
_CHILDREN: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_MAX_CHILDREN = 4096


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """`route` must be a template or a fixed label, never a raw path (a client controls those)."""
    if method not in _METHODS:
        method = "other"
    key = (method, route, status)
    children = _CHILDREN.get(key)
    if children is None:
        children = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
        if len(_CHILDREN) < _MAX_CHILDREN:
            _CHILDREN[key] = children
    children[0].inc()
    children[1].observe(seconds)


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
