"""Soak: one `apiforge serve` under a mixed gateway and management load, in rounds; after each
round, idle, what the process and its storage hold (RSS, fds, threads, database and answer-log
sizes, Redis keys). A figure that keeps rising round after round is a leak to look into.

The app is built as `bench/run.py` builds it (its helpers, over the HTTP API), on the embedded
SQLite default or, with `--database-url` (and `--redis`), on PostgreSQL + Redis. The server runs
this checkout's `src/` on CPU 0, wrk on CPU 1 (`bench/soak.lua`: the mix, in turn)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypedDict

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # bench/run.py, beside this file

POSTS = 2_000
FAIL_API = {
    "api": "failPost",
    "name": "Always refused",
    "steps": [{"id": "refuse", "type": "throw", "status": 409, "error": "soak_refused"}],
}
EXPECTED = {200, 400, 401, 404, 409}


class Request(TypedDict):
    method: str
    path: str
    headers: dict[str, str]
    body: str


def apiforge(*argv: str) -> list[str]:
    """This checkout's apiforge (its `src/` first on PYTHONPATH), whichever venv runs it."""
    return [sys.executable, "-c", "from apiforge.cli import main; main()", *argv]


def mix(call: run.Call, console: dict[str, str], app_id: str) -> list[Request]:
    """The requests wrk sends in turn: charged calls (plain, fresh key, one key replayed),
    calls refused before the run (bad key, bad args, unknown API), a call failing in its step,
    management reads and record inserts through the gateway."""
    body = json.loads(call.body)
    path = "/api/v1/invocations"

    def invoke(headers: dict[str, str] | None = None, **changes: Any) -> Request:
        sent = {**call.headers, **(headers or {})}
        return {"method": "POST", "path": path, "headers": sent, "body": json.dumps(body | changes)}

    def read(url: str) -> Request:
        return {"method": "GET", "path": url, "headers": console, "body": ""}

    insert = {"title": "soak {rand}", "body": "written under load", "published": False}
    return [
        invoke(),
        invoke({"Idempotency-Key": "soak-{rand}"}),
        invoke({"Idempotency-Key": "soak-replayed"}),
        invoke({"X-Api-Key": "app-{rand}"}),  # 401
        invoke(args={"pageSize": "many"}),  # 400
        invoke(),
        invoke(api="noSuchApi{rand}"),  # 404
        invoke(api="failPost", version="1.0.2", args={}),  # 409 from its throw step
        read("/api/v1/apps"),
        read(f"/api/v1/apps/{app_id}/apis"),
        invoke(),
        read(f"/api/v1/apps/{app_id}/versions"),
        read("/api/v1/api-keys"),
        invoke(api="createPost", args=insert),
    ]


def lua_requests(requests: list[Request]) -> str:
    def one(r: Request) -> str:
        headers = "\n".join(f"{k}: {v}" for k, v in r["headers"].items())
        return "\x1f".join((r["method"], r["path"], headers, r["body"]))

    return "\x1e".join(one(r) for r in requests)


def load(base: str, requests: str, seconds: int, connections: int) -> dict[str, Any]:
    env = {**os.environ, "SOAK_REQUESTS": requests}
    argv = [
        "taskset", "-c", run.CLIENT_CPU, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s",
        "--timeout", "5s", "-s", str(run.BENCH / "soak.lua"), base,
    ]  # fmt: skip
    out = subprocess.run(  # noqa: S603
        argv, env=env, capture_output=True, text=True, timeout=seconds + 30, check=True
    ).stdout
    line = next(x for x in out.splitlines() if x.startswith("SOAK_RESULT "))
    result: dict[str, Any] = json.loads(line.removeprefix("SOAK_RESULT "))
    return result


def size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def redis_keys(url: str, prefix: str) -> tuple[int, int]:
    """Keys under the prefix, and how many of them never expire."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.ttl(key)
        return len(keys), sum(1 for ttl in pipe.execute() if ttl == -1)
    finally:
        client.close()


def sample(pid: int, data_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    figures: dict[str, Any] = {
        "rss_mb": round(int(status["VmRSS"].split()[0]) / 1024, 1),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
    }
    if not args.database_url:
        database = data_dir / "apiforge.db"
        figures["db_mb"] = round(size(database) / 2**20, 2)
        figures["wal_mb"] = round(size(database.with_name("apiforge.db-wal")) / 2**20, 2)
        figures["answers_mb"] = round(size(database.with_name("apiforge.db-answers")) / 2**20, 2)
    if args.redis:
        figures["redis_keys"], figures["redis_keys_no_ttl"] = redis_keys(args.redis, args.prefix)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=40, help="load per round")
    parser.add_argument("--idle", type=float, default=3.0, help="idle before each sample")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--work", type=Path, default=run.RESULTS / "soak")
    parser.add_argument("--database-url", default="", help="PostgreSQL (empty: embedded SQLite)")
    parser.add_argument("--redis", default="", help="Redis URL (empty: none)")
    parser.add_argument("--prefix", default="soak:", help="APIFORGE_REDIS_PREFIX")
    parser.add_argument("--json", type=Path, help="write the rounds here")
    args = parser.parse_args(argv)
    run.check(args.rounds in range(1, 101) and args.seconds in range(1, 601), "bounded run")
    run.check(shutil.which("wrk") is not None, "wrk is not installed (make bench installs it)")
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    data_dir = args.work / "data"
    port = run.free_port()
    settings = {
        "APIFORGE_DATA_DIR": str(data_dir),
        "APIFORGE_HOST": run.HOST,
        "APIFORGE_PORT": str(port),
        "PYTHONPATH": str(run.ROOT / "src"),
    }
    if args.database_url:
        settings["APIFORGE_DATABASE_URL"] = args.database_url
    if args.redis:
        settings |= {"APIFORGE_REDIS_URL": args.redis, "APIFORGE_REDIS_PREFIX": args.prefix}
    env = run.clean_env(**settings)
    admin = ("admin", "create", "--email", run.ADMIN["email"], "--password-stdin")
    for command, stdin in ((("db", "upgrade"), None), (admin, run.ADMIN["password"] + "\n")):
        subprocess.run(  # noqa: S603
            apiforge(*command), input=stdin, text=True, cwd=args.work, env=env, check=True,
            capture_output=True, timeout=120,
        )  # fmt: skip
    server = run.Server("apiforge", apiforge("serve"), env, args.work, args.work / "server.log")
    base = f"http://{run.HOST}:{port}"
    rounds: list[dict[str, Any]] = []
    with run.running(server, f"{base}/healthz"):
        setup = argparse.Namespace(work=args.work, console=False)  # what run.py's setup reads
        call = run.setup_apiforge(base, run.make_posts(POSTS), setup)
        app_id = json.loads(call.body)["appId"]
        with httpx.Client(base_url=base, timeout=60.0) as client:
            login = {"email": run.BUILDER["email"], "password": run.BUILDER["password"]}
            token = run.data_of(client.post("/api/v1/auth/login", json=login))["accessToken"]
            console = {"Authorization": f"Bearer {token}"}
            run.data_of(client.post(f"/api/v1/apps/{app_id}/apis", json=FAIL_API, headers=console))
            bump = {"bump": "patch", "notes": "soak"}
            published = client.post(f"/api/v1/apps/{app_id}/versions", json=bump, headers=console)
            run.check(run.data_of(published)["version"] == "1.0.2", "failPost at 1.0.2")
        requests = lua_requests(mix(call, console, app_id))
        assert server.process is not None
        pid = server.process.pid
        # `taskset` execs the server: the pid is the Python process itself.
        time.sleep(args.idle)
        before = sample(pid, data_dir, args)
        print(f"round 0 (set up): {json.dumps(before)}", flush=True)
        rounds.append({"round": 0, **before})
        for number in range(1, args.rounds + 1):
            result = load(base, requests, args.seconds, args.connections)
            time.sleep(args.idle)
            figures = sample(pid, data_dir, args)
            unexpected = {s: n for s, n in result["statuses"].items() if int(s) not in EXPECTED}
            rate = result["requests"] / (result["duration_us"] / 1e6)
            line = {
                "round": number,
                "requests": result["requests"],
                "req_s": round(rate),
                "statuses": result["statuses"],
                "socket_errors": result["socket_errors"],
                **figures,
            }
            rounds.append(line)
            print(f"round {number}: {json.dumps(line)}", flush=True)
            if unexpected or result["socket_errors"]:
                print(f"  unexpected: {unexpected}, socket errors {result['socket_errors']}")
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=2) + "\n")
    if len(rounds) > 3:  # round 0 is the set-up; rounds 1 and 2 warm the caches up
        growth = (rounds[-1]["rss_mb"] - rounds[2]["rss_mb"]) / (len(rounds) - 3)
        print(f"RSS after the 2 warm-up rounds: {growth:+.1f} MB per round")
    return 0


if __name__ == "__main__":
    sys.exit(main())
