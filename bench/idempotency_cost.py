"""What idempotency adds to a gateway call: CPU per call with the stage out, in without a key,
with a fresh key per call (claim + stored answer), and replaying one key.

The call is `charge_cost.py`'s read (20 published posts, newest first, with the total), free of
charge so that only idempotency differs. Calls go one at a time into the ASGI app (SQLite, one
process, uvloop) in short alternating blocks; process CPU time (all threads, so aiosqlite's
thread counts) per call is reported for each mode, and the medians of the paired differences.

    .venv/bin/python bench/idempotency_cost.py [--calls 200] [--rounds 20]
"""

import argparse
import itertools
import statistics
import tempfile
import time
from typing import Any

import uvloop
from charge_cost import _endpoint, _setup, prepare
from httpx import ASGITransport, AsyncClient

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.gateway.endpoint import GatewayEndpoint

MODES = ("stage out", "no key", "fresh key", "replay")
_serial = itertools.count()


def _pipeline(endpoint: GatewayEndpoint, mode: str, stages: Any, after: Any) -> None:
    """The idempotency stage and its release taken out for "stage out", else as built."""
    out = mode == "stage out"
    names = ("idempotency", "idempotency_release")
    endpoint.stages = tuple(s for s in stages if not (out and s.name in names))
    endpoint.after = tuple(s for s in after if not (out and s.name in names))


async def _block(
    http: AsyncClient, app: Any, app_id: str, key: str, mode: str, calls: int
) -> float:
    body = {"appId": app_id, "api": "listPosts", "version": "latest", "args": {}}
    buffer = app.state.gateway_state.extra["request_logs"]
    started = time.process_time()
    for _ in range(calls):
        headers = {"X-Api-Key": key}
        if mode == "fresh key":
            headers["Idempotency-Key"] = f"bench-{next(_serial)}"
        elif mode == "replay":
            headers["Idempotency-Key"] = "bench-replayed"
        response = await http.post("/api/v1/invocations", json=body, headers=headers)
        assert response.status_code == 200, response.text
    await buffer.flush()
    return (time.process_time() - started) / calls * 1e6


async def main(settings: Settings, calls: int, rounds: int) -> None:
    app = create_app(settings)
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://bench") as http:
        app_id, key = await _setup(http)
        # The API is priced in charge_cost's setup: make it free so charging stays out of it.
        endpoint = _endpoint(app)
        stages = tuple(s for s in endpoint.stages if s.name != "charge")
        after = tuple(s for s in endpoint.after if s.name != "charge")
        for mode in MODES:  # warm caches and compiled plans every way
            _pipeline(endpoint, mode, stages, after)
            await _block(http, app, app_id, key, mode, min(calls, 200))
        times: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(rounds):
            for mode in MODES:
                _pipeline(endpoint, mode, stages, after)
                times[mode].append(await _block(http, app, app_id, key, mode, calls))
    await shutdown(app)
    base = statistics.median(times["stage out"])
    for mode in MODES:
        value = statistics.median(times[mode])
        added = statistics.median(
            a - b for a, b in zip(times[mode], times["stage out"], strict=True)
        )
        print(
            f"{mode:>10}: {value:7.1f} us CPU per call; adds {added:6.1f} us "
            f"({added / base * 100:5.1f}% of the call)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        uvloop.run(main(prepare(work), args.calls, args.rounds))
