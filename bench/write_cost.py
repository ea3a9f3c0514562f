"""What a record write pays for its schema check: one-record insert and update gateway calls,
the check three ways, in alternating blocks in one process.

- `unheld`: no check (the write as before schema changes and writes were serialised:
  `RecordStore._hold_fields` made a no-op that reads nothing);
- `held`: every write reads the collection's fields under the lock first (`_hold_fields`; on
  SQLite `BEGIN IMMEDIATE` and a `SELECT`);
- `current`: the store as it is (on SQLite a write whose schema knows the collection's version
  is conditional on it instead, `RecordStore._unheld`).

Calls go one at a time into the ASGI app (uvloop), to a published version (priced: charged as
any call). Wall and process CPU time (all threads) per call are reported per mode, and what the
check adds over `unheld`.

    .venv/bin/python bench/write_cost.py [--calls 200] [--rounds 20]
        [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/bench]

A PostgreSQL database given is emptied (its `public` schema dropped) first.
"""

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvloop
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from apiforge.app import create_app, shutdown
from apiforge.core.settings import Settings
from apiforge.datasets.schema import CollectionSchema, FieldKinds, field_kinds
from apiforge.datasets.store import RecordStore
from apiforge.migrate import upgrade

FIELDS = [{"name": "text", "type": "string"}, {"name": "n", "type": "integer"}]
TEXT = {"name": "text", "type": "string", "required": True, "max": 200}
ID = {"name": "id", "type": "string", "required": True, "max": 64}
APIS: dict[str, tuple[list[Any], list[Any]]] = {
    "addNote": (
        [TEXT],
        [
            {
                "id": "note",
                "type": "insert",
                "collection": "notes",
                "data": {"text": {"expr": "args.text"}},
            }
        ],
    ),
    "editNote": (
        [ID, TEXT],
        [
            {
                "id": "note",
                "type": "update",
                "collection": "notes",
                "recordId": {"expr": "args.id"},
                "data": {"text": {"expr": "args.text"}},
            }
        ],
    ),
}
MODES = ("unheld", "held", "current")


def _data(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()["data"]


async def _register(http: AsyncClient, email: str) -> dict[str, str]:
    body = {"email": email, "password": "correct horse battery", "name": ""}
    data = _data(await http.post("/api/v1/auth/register", json=body))
    return {"Authorization": f"Bearer {data['accessToken']}"}


async def _setup(http: AsyncClient) -> tuple[str, str, str]:
    """(app id, app key, the id of a note to edit)."""
    builder = await _register(http, "builder@example.com")
    consumer = await _register(http, "consumer@example.com")
    body: dict[str, Any] = {"name": "Notes", "visibility": "public"}
    app_id = _data(await http.post("/api/v1/apps", json=body, headers=builder))["id"]
    body = {"appId": app_id, "name": "notes", "fields": FIELDS}
    _data(await http.post("/api/v1/datasets", json=body, headers=builder))
    for api, (params, steps) in APIS.items():
        body = {"api": api, "params": params, "steps": steps, "price": 10}
        _data(await http.post(f"/api/v1/apps/{app_id}/apis", json=body, headers=builder))
    body = {"bump": "minor", "notes": "bench"}
    _data(await http.post(f"/api/v1/apps/{app_id}/versions", json=body, headers=builder))
    _data(await http.post("/api/v1/subscriptions", json={"appId": app_id}, headers=consumer))
    body = {"type": "app", "appId": app_id, "name": "bench"}
    key = _data(await http.post("/api/v1/api-keys", json=body, headers=consumer))["key"]
    added = await _invoke(http, app_id, key, "addNote", {"text": "first"})
    return app_id, key, str(added["note"]["id"])


async def _invoke(http: AsyncClient, app_id: str, key: str, api: str, args: Any) -> Any:
    body = {"appId": app_id, "api": api, "version": "latest", "args": args}
    return _data(await http.post("/api/v1/invocations", json=body, headers={"X-Api-Key": key}))


async def _unchecked(self: RecordStore, schema: CollectionSchema) -> FieldKinds:
    """`unheld`: the fields the schema was loaded with, read from nowhere."""
    return field_kinds(f.to_dict() for f in schema.fields)


@contextmanager
def _mode(mode: str) -> Iterator[None]:
    hold, unheld = RecordStore._hold_fields, RecordStore._unheld
    if mode != "current":
        RecordStore._unheld = lambda self, schema: None  # type: ignore[method-assign]
    if mode == "unheld":
        RecordStore._hold_fields = _unchecked  # type: ignore[method-assign]
    try:
        yield
    finally:
        RecordStore._hold_fields, RecordStore._unheld = hold, unheld  # type: ignore[method-assign]


async def _block(
    http: AsyncClient, app: Any, target: tuple[str, str, str], api: str, calls: int
) -> tuple[float, float]:
    """(wall, CPU) µs per call."""
    app_id, key, note = target
    buffer = app.state.gateway_state.extra["request_logs"]
    wall, cpu = time.perf_counter(), time.process_time()
    for i in range(calls):
        args = {"text": f"t{i}"} if api == "addNote" else {"id": note, "text": f"t{i}"}
        await _invoke(http, app_id, key, api, args)
    await buffer.flush()
    return (
        (time.perf_counter() - wall) / calls * 1e6,
        (time.process_time() - cpu) / calls * 1e6,
    )


async def _reset_postgres(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


async def _unlimited(url: str) -> None:
    """The default plan with no rate limit the benchmark's caller would reach."""
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        raw = (await conn.execute(text("SELECT quotas FROM plans WHERE is_default"))).scalar()
        quotas = json.loads(raw) if isinstance(raw, str) else dict(raw)
        quotas.update(requestsPerMinute=-1, concurrentRequests=-1, callsPerMonth=-1)
        await conn.execute(
            text("UPDATE plans SET quotas = :q WHERE is_default"), {"q": json.dumps(quotas)}
        )
    await engine.dispose()


async def main(settings: Settings, calls: int, rounds: int) -> None:
    await _unlimited(settings.resolved_database_url)
    app = create_app(settings)
    transport = ASGITransport(app=app)
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    async with AsyncClient(transport=transport, base_url="http://bench") as http:
        target = await _setup(http)
        for api in APIS:
            for mode in MODES:  # warm caches and compiled plans every way
                with _mode(mode):
                    await _block(http, app, target, api, min(calls, 100))
        for _ in range(rounds):  # short alternating blocks: a busy machine hits all alike
            for api in APIS:
                for mode in MODES:
                    with _mode(mode):
                        times.setdefault((api, mode), []).append(
                            await _block(http, app, target, api, calls)
                        )
    await shutdown(app)
    print(f"{settings.resolved_database_url.split(':')[0]}: medians of {rounds} blocks of {calls}")
    for api in APIS:
        base = times[(api, "unheld")]
        for mode in MODES:
            rows = times[(api, mode)]
            wall = statistics.median(w for w, _ in rows)
            cpu = statistics.median(c for _, c in rows)
            added_wall = statistics.median(w - b for (w, _), (b, _) in zip(rows, base, strict=True))
            added_cpu = statistics.median(c - b for (_, c), (_, b) in zip(rows, base, strict=True))
            print(
                f"{api:8} {mode:8} wall {wall:7.1f} us (+{added_wall:6.1f}, "
                f"{added_wall / (wall - added_wall):+6.1%})   "
                f"cpu {cpu:7.1f} us (+{added_cpu:6.1f}, {added_cpu / (cpu - added_cpu):+6.1%})"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        settings = Settings(
            data_dir=Path(work),
            database_url=args.database_url,
            secret_key="bench-" + "x" * 40,
            log_level="WARNING",
            password_time_cost=1,
            password_memory_kib=1024,
            password_parallelism=1,
            welcome_credits=10**12,
        )
        if args.database_url:
            uvloop.run(_reset_postgres(args.database_url))
        upgrade(settings)
        uvloop.run(main(settings, args.calls, args.rounds))
