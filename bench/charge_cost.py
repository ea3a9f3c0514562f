"""What charging adds to a gateway call: the same API called priced and free, CPU per call.

Two APIs with identical steps (the benchmark's read: 20 published posts, newest first, with the
total) differ only in price: `listPriced` (price 4, cost 1: reserve, settle with three ledger
entries and the request-log row in the call's own commit) and `listFree` (price 0: nothing is
charged, the log row goes through the buffered writer). Calls go one at a time into the ASGI app
(SQLite, one process, uvloop), in alternating blocks; the request-log buffer is flushed inside
each block so the free call pays for its buffered row too. Process CPU time (all threads, so
aiosqlite's thread counts) per call is reported for both, and the difference.

    .venv/bin/python bench/charge_cost.py [--calls 200] [--rounds 30] [--concurrency 1]

With `--concurrency N`, N callers are in flight at once (as under `wrk -c32`), so charges of
concurrent calls share SQLite commits; 1 is the worst case, where every charge commits alone.
"""

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from httpx import ASGITransport, AsyncClient

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.gateway.endpoint import GatewayEndpoint
from apiforge.migrate import upgrade

POST_FIELDS = [
    {"name": "title", "type": "string"},
    {"name": "published", "type": "boolean", "indexed": True},
]
STEPS = [
    {
        "id": "posts",
        "type": "getMany",
        "collection": "posts",
        "filter": {"published": {"_eq": True}},
        "sort": ["-createdTime"],
        "pageSize": 20,
        "withTotal": True,
    }
]


def _data(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def _register(http: AsyncClient, email: str) -> dict[str, str]:
    body = {"email": email, "password": "correct horse battery", "name": ""}
    data = _data(await http.post("/api/v1/auth/register", json=body))
    return {"Authorization": f"Bearer {data['accessToken']}"}


async def _setup(http: AsyncClient) -> tuple[str, str]:
    builder = await _register(http, "builder@example.com")
    consumer = await _register(http, "consumer@example.com")
    body: dict[str, Any] = {"name": "Blog", "visibility": "public"}
    app_id = _data(await http.post("/api/v1/apps", json=body, headers=builder))["id"]
    body = {"appId": app_id, "name": "posts", "fields": POST_FIELDS}
    _data(await http.post("/api/v1/datasets", json=body, headers=builder))
    fill = [
        {
            "id": "fill",
            "type": "forEach",
            "items": {"expr": "args.items"},
            "maxIterations": 500,
            "steps": [
                {
                    "id": "add",
                    "type": "insert",
                    "collection": "posts",
                    "data": {"title": {"expr": "item.t"}, "published": {"expr": "item.p"}},
                }
            ],
        }
    ]
    for batch in range(10):
        items = [{"t": f"post {batch}-{i}", "p": i % 2 == 0} for i in range(200)]
        body = {"appId": app_id, "steps": fill, "args": {"items": items}}
        _data(await http.post("/api/v1/workflows", json=body, headers=builder))
    body = {"api": "listPosts", "steps": STEPS, "price": 4}
    _data(await http.post(f"/api/v1/apps/{app_id}/apis", json=body, headers=builder))
    body = {"bump": "minor", "notes": "bench"}
    _data(await http.post(f"/api/v1/apps/{app_id}/versions", json=body, headers=builder))
    _data(await http.post("/api/v1/subscriptions", json={"appId": app_id}, headers=consumer))
    body = {"type": "app", "appId": app_id, "name": "bench"}
    key = _data(await http.post("/api/v1/api-keys", json=body, headers=consumer))["key"]
    return app_id, key


CONCURRENCY = 1  # callers in flight at once (--concurrency)


def _endpoint(app: Any) -> GatewayEndpoint:
    for route in app.router.routes:
        if isinstance(getattr(route, "endpoint", None), GatewayEndpoint):
            return route.endpoint  # type: ignore[no-any-return]
    raise RuntimeError("no gateway route")


def _charging(endpoint: GatewayEndpoint, on: bool, stages: Any, after: Any) -> None:
    """Put the charge stage in or take it out of the pipeline (everything else unchanged)."""
    endpoint.stages = stages if on else tuple(s for s in stages if s.name != "charge")
    endpoint.after = after if on else tuple(s for s in after if s.name != "charge")


async def _block(http: AsyncClient, app: Any, app_id: str, key: str, calls: int) -> float:
    body = {"appId": app_id, "api": "listPosts", "version": "latest", "args": {}}
    headers = {"X-Api-Key": key}
    buffer = app.state.gateway_state.extra["request_logs"]
    started = time.process_time()

    async def worker(count: int) -> None:
        for _ in range(count):
            response = await http.post("/api/v1/invocations", json=body, headers=headers)
            assert response.status_code == 200, response.text

    await asyncio.gather(*(worker(calls // CONCURRENCY) for _ in range(CONCURRENCY)))
    await buffer.flush()
    return (time.process_time() - started) / calls * 1e6


def prepare(directory: str) -> Settings:
    """A migrated database whose default plan doesn't rate-limit the benchmark's caller."""
    settings = Settings(
        data_dir=Path(directory),
        secret_key="bench-" + "x" * 40,
        log_level="WARNING",
        password_time_cost=1,
        password_memory_kib=1024,
        password_parallelism=1,
        welcome_credits=10**12,
    )
    upgrade(settings)
    with sqlite3.connect(Path(directory) / "apiforge.db") as db:
        (raw,) = db.execute("SELECT quotas FROM plans WHERE is_default").fetchone()
        quotas = json.loads(raw)
        quotas.update(requestsPerMinute=-1, concurrentRequests=-1, callsPerMonth=-1)
        db.execute("UPDATE plans SET quotas = ? WHERE is_default", (json.dumps(quotas),))
    return settings


async def main(settings: Settings, calls: int, rounds: int) -> None:
    if True:
        app = create_app(settings)
        transport = ASGITransport(app=app)
        async with AsyncClient(transport=transport, base_url="http://bench") as http:
            app_id, key = await _setup(http)
            endpoint = _endpoint(app)
            stages, after = endpoint.stages, endpoint.after
            for on in (True, False):  # warm caches and compiled plans both ways
                _charging(endpoint, on, stages, after)
                await _block(http, app, app_id, key, min(calls, 300))
            priced, free = [], []
            for _ in range(rounds):  # short alternating blocks: a busy machine hits both alike
                _charging(endpoint, True, stages, after)
                priced.append(await _block(http, app, app_id, key, calls))
                _charging(endpoint, False, stages, after)
                free.append(await _block(http, app, app_id, key, calls))
            _charging(endpoint, True, stages, after)
        await shutdown(app)
    p, f = statistics.median(priced), statistics.median(free)
    added = statistics.median(a - b for a, b in zip(priced, free, strict=True))
    print(f"charged:     {p:7.1f} us CPU per call (median of {rounds} blocks of {calls})")
    print(f"not charged: {f:7.1f} us CPU per call")
    print(f"charging adds {added:6.1f} us CPU per call (median paired difference)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=1)
    args = parser.parse_args()
    CONCURRENCY = max(1, args.concurrency)
    with tempfile.TemporaryDirectory() as work:
        uvloop.run(main(prepare(work), args.calls, args.rounds))
