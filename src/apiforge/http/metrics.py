"""Prometheus metrics shared by both edges; `/metrics` renders them (`render`).

One process (the default) keeps every figure in memory and renders the default registry. Under
`apiforge serve --workers N` the parent sets `PROMETHEUS_MULTIPROC_DIR` to a directory of its own
before the workers start (cli.py), so prometheus-client keeps each worker's figures in files there,
and a scrape, whichever worker answers it, adds up the files of all of them (exited workers'
included: a counter never goes back). Every metric here is a counter or a histogram; a gauge would
need its `multiprocess_mode` chosen (`livesum`, `max`, ...). The `process_*` figures of every live
worker come from /proc, labelled `pid` (processes.py): each worker records itself there at start.
"""

import os
from pathlib import Path
from typing import Any

from prometheus_client import (
    PLATFORM_COLLECTOR,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from apiforge.http.processes import WorkerProcessCollector, record_path

# Read once, as prometheus-client does when it is first imported: the two always agree.
_MULTIPROCESS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def _scrape_registry() -> CollectorRegistry:
    """Several workers: the sums of the workers' files, the `process_*` figures of each live
    worker (labelled `pid`) and `python_info` (one interpreter for all). Not the default
    collectors: their `process_*` and `python_gc_*` would be whichever worker answered's alone,
    unlabelled, and the garbage collector of another process can't be read."""
    if _MULTIPROCESS_DIR is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, _MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    registry.register(WorkerProcessCollector(_MULTIPROCESS_DIR))
    registry.register(PLATFORM_COLLECTOR)
    return registry


_SCRAPED = _scrape_registry()


def render() -> bytes:
    """The Prometheus text of the whole server (every worker of it)."""
    return generate_latest(_SCRAPED)


# This worker's record among the server's workers (processes.py); set by `worker_started`.
_RECORD: Path | None = None


def worker_started() -> None:
    """Record this worker, so every scrape reports its `process_*` figures; no-op in one process."""
    global _RECORD  # one record per process, made once at its start
    if _MULTIPROCESS_DIR is not None and _RECORD is None:
        record = record_path(_MULTIPROCESS_DIR)
        if record is not None:
            try:
                record.touch()
            except OSError:  # never a reason to refuse to serve: its figures just go missing
                return
        _RECORD = record


def worker_exiting() -> None:
    """Drop this worker's record and its `live*` gauge files (a counter's stay counted); no-op in
    one process."""
    global _RECORD
    if _MULTIPROCESS_DIR is not None:
        if _RECORD is not None:
            _RECORD.unlink(missing_ok=True)
            _RECORD = None
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
