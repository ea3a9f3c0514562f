"""Where a gateway call's time goes, stage by stage: N calls driven in-process through the ASGI app.

`bench/run.py` runs this after the load tests, on a copy of the benchmark's apiforge data dir and
with the very headers and body wrk sent. The app is `apiforge.app.create_app` as `apiforge serve`
builds it (lifespan included, uvloop as uvicorn picks it); calls go one at a time straight into
the ASGI callable: no HTTP server, no socket, no concurrency. Each call is split into

- the middleware stack and routing (everything outside the gateway endpoint),
- the endpoint's own work (headers, body, context, connection checkout and release, response),
- each stage's `on_request` and each after-stage,
- inside every stage, the SQL statements (between SQLAlchemy's before/after cursor events: the
  statement plus aiosqlite's hop to its worker thread and back; fetching rows is not included).

Each part is measured twice: wall time, and the CPU time of the whole process (all threads, so
SQLite's work in aiosqlite's thread counts). CPU time does not grow when other programs share
the core, so it is the figure to compare across runs; wall time also holds the waits for the
database thread. The floor (`bench/floor_app.py`) is driven the same way for comparison, and a
last pass runs the apiforge calls under cProfile and keeps the functions with the most own time.

Standalone: `python bench/stage_profile.py --data-dir DIR --call CALL.json [--calls N]`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import importlib
import inspect
import json
import os
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event

from apiforge.app import create_app
from apiforge.core.settings import Settings
from apiforge.gateway.endpoint import GatewayEndpoint

Message = dict[str, Any]
BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))  # floor_app, imported where needed
OUTSIDE = "middleware + routing"
ENDPOINT = "endpoint (context, connection, response)"
STATEMENT_WIDTH = 160

# Functions timed inside the stages (inclusive, so they overlap: `get_many` holds `_count` and
# `_out`, `execute` holds the step). Each is charged to the part that was running when it was
# called. A name the code no longer has is skipped and listed as such.
PROBES = (
    ("apiforge.keys.lookup", "KeyLookup.key"),
    ("apiforge.keys.lookup", "KeyLookup.subscription_enabled"),
    ("apiforge.engine.loader", "ApiLoader.target"),
    ("apiforge.engine.loader", "ApiLoader.load"),
    ("apiforge.gateway.stages.permissions", "verify_end_user_token"),
    ("apiforge.gateway.stages.run", "runtime_env"),
    ("apiforge.gateway.stages.run", "execute"),
    ("apiforge.datasets.store", "RecordStore.get_many"),
    ("apiforge.datasets.store", "RecordStore._count"),
    ("apiforge.datasets.store", "RecordStore._out"),
    ("apiforge.engine.values", "_Expression.evaluate"),
    ("apiforge.engine.runtime", "check_response_size"),
    ("apiforge.gateway.stages.run", "envelope"),
    ("sqlalchemy.ext.asyncio.engine", "AsyncConnection.start"),
    ("sqlalchemy.ext.asyncio.engine", "AsyncConnection.execute"),
    ("sqlalchemy.ext.asyncio.engine", "AsyncConnection.commit"),
    ("sqlalchemy.ext.asyncio.engine", "AsyncConnection.close"),
    # Every hop to aiosqlite's worker thread and back (cursor, execute, fetch, close, commit).
    ("aiosqlite.core", "Connection._execute"),
)


def now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


class Clock:
    """Per-call accumulators of (wall, cpu) seconds; `current` names the part running now, so
    SQL statements are charged to it."""

    def __init__(self) -> None:
        self.current = ENDPOINT
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.sql: dict[str, float] = defaultdict(float)
        self.queries: dict[str, int] = defaultdict(int)
        self.statements: dict[str, int] = defaultdict(int)
        self.started: dict[int, float] = {}
        # (part, probe) -> [wall, cpu, calls], summed over all measured calls
        self.probes: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
        self.measuring = False  # probes count only during measured apiforge calls

    def reset(self) -> None:
        self.current = ENDPOINT
        self.wall.clear()
        self.cpu.clear()
        self.sql.clear()
        self.queries.clear()

    def probed(self, part: str, label: str, begun: tuple[float, float]) -> None:
        if not self.measuring:
            return
        wall, cpu = now()
        entry = self.probes[(part, label)]
        entry[0] += wall - begun[0]
        entry[1] += cpu - begun[1]
        entry[2] += 1

    def add(self, name: str, begun: tuple[float, float]) -> None:
        wall, cpu = now()
        self.wall[name] += wall - begun[0]
        self.cpu[name] += cpu - begun[1]


class TimedStage:
    """Wraps a stage (or after-stage): same name, times its hook, sets the SQL attribution."""

    def __init__(self, stage: Any, clock: Clock, hook: str) -> None:
        self.stage = stage
        self.name = stage.name
        self.clock = clock
        self.label = f"stage {stage.name}" if hook == "on_request" else f"after {stage.name}"
        self.hook: Callable[[Any], Awaitable[None]] = getattr(stage, hook)
        setattr(self, hook, self._run)

    async def _run(self, ctx: Any) -> None:
        previous, self.clock.current = self.clock.current, self.label
        begun = now()
        try:
            await self.hook(ctx)
        finally:
            self.clock.add(self.label, begun)
            self.clock.current = previous


def instrument(app: Any, clock: Clock) -> Callable[[], None]:
    """Wrap the gateway endpoint's stages and the endpoint itself; listen to SQL statements.
    Returns the function that takes it all off again."""
    endpoint = next(
        route.app
        for route in app.router.routes
        if getattr(route, "path", "") == "/api/v1/invocations"
        and isinstance(getattr(route, "app", None), GatewayEndpoint)
    )
    stages, after_stages, cls = endpoint.stages, endpoint.after, endpoint.__class__
    endpoint.stages = tuple(TimedStage(s, clock, "on_request") for s in stages)
    endpoint.after = tuple(TimedStage(s, clock, "after") for s in after_stages)
    original = endpoint.__call__

    class Timed(type(endpoint)):  # type: ignore[misc]
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            begun = now()
            try:
                await original(scope, receive, send)
            finally:
                clock.add("endpoint total", begun)

    endpoint.__class__ = Timed
    sync_engine = app.state.engine.sync_engine

    @event.listens_for(sync_engine, "before_cursor_execute")
    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        clock.started[id(cursor)] = time.perf_counter()

    @event.listens_for(sync_engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        begun = clock.started.pop(id(cursor), None)
        if begun is not None:
            clock.sql[clock.current] += time.perf_counter() - begun
            clock.queries[clock.current] += 1
            text = " ".join(statement.split())[:STATEMENT_WIDTH]
            clock.statements[f"{clock.current}: {text}"] += 1

    def restore() -> None:
        endpoint.stages, endpoint.after, endpoint.__class__ = stages, after_stages, cls
        event.remove(sync_engine, "before_cursor_execute", before)
        event.remove(sync_engine, "after_cursor_execute", after)

    return restore


def install_probes(clock: Clock) -> tuple[list[str], Callable[[], None]]:
    """Wrap each function of `PROBES` in place; returns the names that were not found and the
    function that puts the originals back."""
    missing = []
    originals: list[tuple[Any, str, Any]] = []
    for module_name, qualname in PROBES:
        try:
            owner: Any = importlib.import_module(module_name)
            *path, attribute = qualname.split(".")
            for part in path:
                owner = getattr(owner, part)
            function = getattr(owner, attribute)
        except (ImportError, AttributeError):
            missing.append(f"{module_name}.{qualname}")
            continue
        originals.append((owner, attribute, owner.__dict__[attribute]))
        setattr(owner, attribute, _probe(function, qualname, clock))

    def restore() -> None:
        for owner, attribute, original in reversed(originals):
            setattr(owner, attribute, original)

    return missing, restore


def _probe(function: Any, label: str, clock: Clock) -> Any:
    if inspect.iscoroutinefunction(function):

        @functools.wraps(function)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            part, begun = clock.current, now()
            try:
                return await function(*args, **kwargs)
            finally:
                clock.probed(part, label, begun)

        return timed_async

    @functools.wraps(function)
    def timed(*args: Any, **kwargs: Any) -> Any:
        part, begun = clock.current, now()
        try:
            return function(*args, **kwargs)
        finally:
            clock.probed(part, label, begun)

    return timed


async def lifespan(app: Any) -> Callable[[], Awaitable[None]]:
    """Start the app's lifespan (as uvicorn does) and return the shutdown."""
    inbox: asyncio.Queue[Message] = asyncio.Queue()
    outbox: asyncio.Queue[Message] = asyncio.Queue()

    async def receive() -> Message:
        return await inbox.get()

    async def send(message: Message) -> None:
        await outbox.put(message)

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    await inbox.put({"type": "lifespan.startup"})
    started = await asyncio.wait_for(outbox.get(), 30)
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"lifespan startup failed: {started}")

    async def shutdown() -> None:
        await inbox.put({"type": "lifespan.shutdown"})
        await asyncio.wait_for(outbox.get(), 30)
        await asyncio.wait_for(task, 30)

    return shutdown


def scope_of(path: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    raw.append((b"content-length", str(len(body)).encode()))
    raw.append((b"host", b"127.0.0.1"))
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


async def call_once(app: Any, scope: dict[str, Any], body: bytes) -> tuple[int, bytes]:
    sent = False
    status = 0
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # a disconnect would only come after the response
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(dict(scope), receive, send)
    return status, b"".join(chunks)


async def drive(args: argparse.Namespace, call: dict[str, Any]) -> dict[str, Any]:
    headers: dict[str, str] = call["headers"]
    body = call["body"].encode()
    scope = scope_of("/api/v1/invocations", headers, body)
    work = Path(tempfile.mkdtemp(prefix="apiforge-profile-"))
    try:
        data_dir = work / "data"
        shutil.copytree(args.data_dir, data_dir)
        settings = Settings(data_dir=data_dir, _env_file=None)
        clock = Clock()
        missing, remove_probes = install_probes(clock)
        app = create_app(settings)
        remove_stage_timers = instrument(app, clock)
        floor = Floor(args, call) if args.floor_db else None
        shutdown = await lifespan(app)
        try:
            if floor is not None:
                await floor.start()
            for _ in range(args.warmup):
                status, answer = await call_once(app, scope, body)
                if status != 200:
                    raise SystemExit(f"profile call answered {status}: {answer[:500]!r}")
                if floor is not None:
                    await floor.call(measure=False)
            wall: dict[str, list[float]] = defaultdict(list)
            cpu: dict[str, list[float]] = defaultdict(list)
            sql: dict[str, float] = defaultdict(float)
            queries: dict[str, int] = defaultdict(int)
            clock.statements.clear()
            for _ in range(args.calls):
                # One apiforge call, then one floor call: both see the same machine.
                clock.reset()
                clock.measuring = True
                begun = now()
                status, _answer = await call_once(app, scope, body)
                clock.add("total", begun)
                clock.measuring = False
                if status != 200:
                    raise SystemExit(f"profile call answered {status}")
                for kind, into in ((clock.wall, wall), (clock.cpu, cpu)):
                    inside = sum(v for k, v in kind.items() if k.startswith(("stage ", "after ")))
                    into["total"].append(kind["total"])
                    into[OUTSIDE].append(kind["total"] - kind["endpoint total"])
                    into[ENDPOINT].append(kind["endpoint total"] - inside)
                    for name, value in kind.items():
                        if name.startswith(("stage ", "after ")):
                            into[name].append(value)
                for name, value in clock.sql.items():
                    sql[name] += value
                for name, value in clock.queries.items():
                    queries[name] += value
            statements = dict(clock.statements)
            # The same calls with every timer removed, alternating with the floor: the totals.
            remove_stage_timers()
            remove_probes()
            plain = Plain()
            for _ in range(args.calls):
                await plain.call(app, scope, body)
                if floor is not None:
                    await floor.call(measure=True)
            profiled = await cprofile(app, scope, body, min(args.calls, 500))
        finally:
            if floor is not None:
                await floor.stop()
            await shutdown()
        try:
            queries_compared = await compare_queries(
                data_dir / "apiforge.db", call["app_id"], max(args.calls // 10, 20)
            )
        except Exception as exc:  # a changed store API must not cost the stage table
            queries_compared = {"skipped": f"{type(exc).__name__}: {exc}"}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    floor_result = floor.result() if floor is not None else None
    result = report(
        wall,
        cpu,
        sql,
        queries,
        statements,
        profiled,
        floor_result,
        args.calls,
        clock.probes,
        plain.result(),
    )
    result["probes_missing"] = missing
    result["queries_compared_cpu_us"] = queries_compared
    lines = [result["table"], "", "page + count, three ways (CPU us per call):"]
    lines += [f"  {value:>8}  {name}" for name, value in queries_compared.items()]
    result["table"] = "\n".join(lines)
    return result


async def compare_queries(database: Path, app_id: str, calls: int) -> dict[str, Any]:
    """The `getMany` page + count three ways on the same SQLite file, interleaved: as the gateway
    runs them (`RecordStore.get_many` over SQLAlchemy Core, rendering included), the same SQL
    text through `AsyncConnection.exec_driver_sql`, and raw aiosqlite as the floor runs it.
    Returns CPU µs per page + count (and commit, for the two SQLAlchemy ways)."""
    import aiosqlite
    from floor_app import COUNT_SQL, PAGE_SQL

    from apiforge.core.db import make_engine
    from apiforge.datasets.sql import field_expression
    from apiforge.datasets.store import RecordStore
    from apiforge.engine.loader import ApiLoader

    engine = make_engine(f"sqlite+aiosqlite:///{database}")
    raw = await aiosqlite.connect(database)
    try:
        sql = "SELECT a.workspace_id, c.id FROM apps a JOIN collections c ON c.app_id = a.id "
        async with raw.execute(f"{sql} WHERE a.id = ? AND c.name = 'posts'", (app_id,)) as cur:
            row = await cur.fetchone()
        assert row is not None
        partition, collection = str(row[0]), str(row[1])
        page_sql, count_sql = (
            PAGE_SQL.format(collection=collection),
            COUNT_SQL.format(collection=collection),
        )
        async with engine.connect() as conn:
            schema = (await ApiLoader().collections(conn, app_id))["posts"]
            store = RecordStore(conn, None)
            field = schema.field("published")
            assert field is not None
            published = field_expression(conn.dialect, field)
            where = published == True  # noqa: E712 - SQL, not Python truthiness

            async def core() -> None:
                await store.get_many(schema, partition, where=where, page_size=20)
                await conn.commit()

            async def driver_sql() -> None:
                (await conn.exec_driver_sql(page_sql, (partition, 20, 0))).all()
                (await conn.exec_driver_sql(count_sql, (partition,))).scalar()
                await conn.commit()

            async def floor_way() -> None:
                async with raw.execute(page_sql, (partition, 20, 0)) as cursor:
                    await cursor.fetchall()
                async with raw.execute(count_sql, (partition,)) as cursor:
                    await cursor.fetchone()

            ways = {
                "RecordStore.get_many (SQLAlchemy Core, as the gateway)": core,
                "exec_driver_sql, the same SQL text": driver_sql,
                "raw aiosqlite (as the floor)": floor_way,
            }
            spent = dict.fromkeys(ways, 0.0)
            rounds = 5
            for _ in range(rounds):
                for name, way in ways.items():
                    for _ in range(20):
                        await way()
                    begun = time.process_time()
                    for _ in range(calls):
                        await way()
                    spent[name] += time.process_time() - begun
    finally:
        await raw.close()
        await engine.dispose()
    return {name: round(value / (rounds * calls) * 1e6, 1) for name, value in spent.items()}


class Plain:
    """Totals of uninstrumented apiforge calls."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0
        self.calls = 0

    async def call(self, app: Any, scope: dict[str, Any], body: bytes) -> None:
        begun = now()
        status, _answer = await call_once(app, scope, body)
        wall, cpu = now()
        if status != 200:
            raise SystemExit(f"profile call answered {status}")
        self.wall += wall - begun[0]
        self.cpu += cpu - begun[1]
        self.calls += 1

    def result(self) -> dict[str, float]:
        return {
            "mean_wall_us": round(self.wall / self.calls * 1e6, 1),
            "mean_cpu_us": round(self.cpu / self.calls * 1e6, 1),
        }


class Floor:
    """The floor app (`bench/floor_app.py`) driven in-process the same way, for comparison."""

    def __init__(self, args: argparse.Namespace, call: dict[str, Any]) -> None:
        os.environ["BENCH_FLOOR_DB"] = args.floor_db
        os.environ["BENCH_FLOOR_APP_ID"] = call["app_id"]
        # The app's signing secret is sealed under apiforge's server key (as bench/run.py passes
        # it to the floor server): without it the floor's start-up fails.
        secret_key = Path(args.data_dir) / "secret.key"
        os.environ["BENCH_FLOOR_SERVER_KEY"] = secret_key.read_text().strip()
        from floor_app import app

        self.app = app
        headers = call["headers"]
        token = headers.get("X-End-User-Token") or headers["Authorization"].split()[1]
        self.body = call["body"].encode()
        self.scope = scope_of("/invoke", {"authorization": f"Bearer {token}"}, self.body)
        self.wall = 0.0
        self.cpu = 0.0
        self.calls = 0
        self._shutdown: Callable[[], Awaitable[None]] | None = None

    async def start(self) -> None:
        self._shutdown = await lifespan(self.app)

    async def stop(self) -> None:
        if self._shutdown is not None:
            await self._shutdown()

    async def call(self, measure: bool) -> None:
        begun = now()
        status, answer = await call_once(self.app, self.scope, self.body)
        wall, cpu = now()
        if status != 200:
            raise SystemExit(f"floor call answered {status}: {answer[:300]!r}")
        if measure:
            self.wall += wall - begun[0]
            self.cpu += cpu - begun[1]
            self.calls += 1

    def result(self) -> dict[str, float]:
        return {
            "mean_wall_us": round(self.wall / self.calls * 1e6, 1),
            "mean_cpu_us": round(self.cpu / self.calls * 1e6, 1),
        }


async def cprofile(
    app: Any, scope: dict[str, Any], body: bytes, calls: int
) -> list[dict[str, Any]]:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(calls):
        await call_once(app, scope, body)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows = []
    entries = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: item[1][2],
        reverse=True,
    )
    for (filename, line, function), (_cc, ncalls, tottime, cumtime, _callers) in entries[:40]:
        where = filename
        for marker in ("site-packages/", "/src/", "lib/python3.11/"):
            if marker in filename:
                where = filename.split(marker, 1)[1]
                break
        rows.append(
            {
                "function": f"{where}:{line}({function})",
                "calls_per_request": round(ncalls / calls, 1),
                "own_us_per_request": round(tottime / calls * 1e6, 1),
                "cumulative_us_per_request": round(cumtime / calls * 1e6, 1),
            }
        )
    return rows


def report(
    wall: dict[str, list[float]],
    cpu: dict[str, list[float]],
    sql: dict[str, float],
    queries: dict[str, int],
    statements: dict[str, int],
    profiled: list[dict[str, Any]],
    floor: dict[str, float] | None,
    calls: int,
    probes: dict[tuple[str, str], list[float]],
    plain: dict[str, float],
) -> dict[str, Any]:
    total_wall = statistics.fmean(wall["total"])
    total_cpu = statistics.fmean(cpu["total"])
    order = [OUTSIDE, ENDPOINT] + [k for k in wall if k.startswith(("stage ", "after "))]
    rows: list[dict[str, Any]] = []
    for name in order:
        if not wall.get(name):
            continue
        mean_cpu = statistics.fmean(cpu[name])
        rows.append(
            {
                "part": name,
                "cpu_us": round(mean_cpu * 1e6, 1),
                "cpu_share": round(mean_cpu / total_cpu, 3),
                "wall_us": round(statistics.fmean(wall[name]) * 1e6, 1),
                "sql_wall_us": round(sql.get(name, 0.0) / calls * 1e6, 1),
                "queries": round(queries.get(name, 0) / calls, 2),
                "inside": [
                    {
                        "function": label,
                        "cpu_us": round(c / calls * 1e6, 1),
                        "wall_us": round(w / calls * 1e6, 1),
                        "calls": round(n / calls, 2),
                    }
                    for (part, label), (w, c, n) in probes.items()
                    if part == name
                ],
            }
        )
    lines = [
        f"apiforge per call, in-process ({calls} calls one at a time; CPU = all threads)",
        f"{'part':<44}{'CPU us':>9}{'share':>8}{'wall us':>9}{'SQL wall us':>13}{'queries':>9}",
    ]
    for row in rows:
        lines.append(
            f"{row['part']:<44}{row['cpu_us']:>9.0f}{row['cpu_share'] * 100:>7.1f}%"
            f"{row['wall_us']:>9.0f}{row['sql_wall_us']:>13.0f}{row['queries']:>9.2f}"
        )
        for inner in row["inside"]:
            name = f"  in it: {inner['function']} x{inner['calls']:g}"
            lines.append(f"{name:<44}{inner['cpu_us']:>9.0f}{'':>8}{inner['wall_us']:>9.0f}")
    timed = f"{'total (with the timers)':<44}{total_cpu * 1e6:>9.0f}{100:>7.1f}%"
    lines.append(f"{timed}{total_wall * 1e6:>9.0f}")
    result: dict[str, Any] = {
        "calls": calls,
        "mean_cpu_us": round(total_cpu * 1e6, 1),
        "mean_wall_us": round(total_wall * 1e6, 1),
        "p50_wall_us": round(statistics.median(wall["total"]) * 1e6, 1),
        "parts": rows,
        "statements_per_call": {k: round(v / calls, 2) for k, v in sorted(statements.items())},
        "top_own_time": profiled,
    }
    result["plain"] = plain
    lines.append(
        f"{'apiforge without the timers':<44}{plain['mean_cpu_us']:>9.0f}"
        f"{'':>8}{plain['mean_wall_us']:>9.0f}"
    )
    if floor is not None:
        result["floor"] = floor
        result["apiforge_cpu_over_floor"] = round(plain["mean_cpu_us"] / floor["mean_cpu_us"], 2)
        lines.append(
            f"{'floor (same call, bench/floor_app.py)':<44}{floor['mean_cpu_us']:>9.0f}"
            f"{'':>8}{floor['mean_wall_us']:>9.0f}"
        )
        lines.append(
            f"apiforge costs {result['apiforge_cpu_over_floor']:.2f}x the floor's CPU per call"
        )
    result["table"] = "\n".join(lines)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="an apiforge data dir (copied first)")
    parser.add_argument("--call", required=True, help="JSON with the call's app_id, headers, body")
    parser.add_argument("--floor-db", help="also drive bench/floor_app.py on this database copy")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--json", help="write the result here")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 100_000 or not 0 <= args.warmup <= 10_000:
        raise SystemExit("--calls must be 1..100000 and --warmup 0..10000")
    call = json.loads(Path(args.call).read_text())
    try:
        import uvloop
    except ImportError:  # uvicorn falls back to asyncio the same way
        result = asyncio.run(drive(args, call))
    else:
        result = uvloop.run(drive(args, call))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    # On stderr: the app's own log lines go to stdout.
    out = sys.stderr
    print(result["table"], file=out)
    print("\nSQL statements per call:", file=out)
    for statement, count in result["statements_per_call"].items():
        print(f"  {count:>5} x {statement}", file=out)
    print("\nmost own time (cProfile, us per call):", file=out)
    for row in result["top_own_time"][:20]:
        print(f"  {row['own_us_per_request']:>8.1f}  {row['function']}", file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
