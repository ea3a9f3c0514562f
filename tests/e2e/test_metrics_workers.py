"""`apiforge serve --workers 2`: `/metrics` counts the requests of the whole server, whichever
worker answers the scrape (each worker used to report only its own, so Prometheus saw counters
jump and reset between scrapes), and the `process_*` figures of each live worker, labelled with
its pid (a scrape used to carry none: only one worker's could be read in-process).

Which worker serves a connection is the kernel's choice: the test reads it from /proc (the
worker holding the server side of the connection), keeps one connection open per client, and
scrapes through connections of both workers."""

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from apiforge.core.settings import Settings
from tests._servers import running_servers
from tests.conftest import DATABASE_URL

pytestmark = [
    pytest.mark.skipif(
        not Path("/proc/self/net/tcp").exists(),
        reason="reads connections' owners from /proc (Linux)",
    ),
    pytest.mark.skipif(not DATABASE_URL, reason="`--workers` needs PostgreSQL"),
]

DEADLINE = 30.0
MAX_CLIENTS = 200


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (uvicorn's workers)."""
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": the command name may hold spaces and parentheses.
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.add(int(entry.name))
    return found


def _client_ports(pid: int, port: int) -> set[int]:
    """The client ports of the connections to `port` whose server side process `pid` holds."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(local.rpartition(":")[2], 16) == port:
                ports.add(int(remote.rpartition(":")[2], 16))
    return ports


def _client_port(response: httpx.Response) -> int:
    port: int = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    return port


def _healthz_count(text: str) -> float:
    """`apiforge_http_requests_total` of the `/healthz` route, all methods and statuses."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "apiforge_http_requests"
        for sample in family.samples
        if sample.name == "apiforge_http_requests_total" and sample.labels["route"] == "/healthz"
    )


async def _settled(client: httpx.AsyncClient, sent: int) -> None:
    """Scrape through `client` until it counts `sent` (briefly: one worker's count never does)."""
    deadline = time.monotonic() + 2.0
    while True:
        text = (await client.get("/metrics")).text
        if _healthz_count(text) == sent or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def test_metrics_count_every_workers_requests(settings: Settings) -> None:
    async with running_servers(settings, count=1, args=("--workers", "2")) as servers:
        port = int(servers[0].rpartition(":")[2])
        # One connection per client, kept open: the worker holding it answers all its requests.
        clients: dict[int, httpx.AsyncClient] = {}  # worker pid -> a client it serves
        sent = 0
        deadline = time.monotonic() + DEADLINE
        try:
            opened = 0
            while len(clients) < 2:
                assert opened < MAX_CLIENTS, f"both workers never served: {sorted(clients)}"
                assert time.monotonic() < deadline, f"both workers never served: {sorted(clients)}"
                client = httpx.AsyncClient(
                    base_url=servers[0], timeout=10, limits=httpx.Limits(max_connections=1)
                )
                opened += 1
                response = await client.get("/healthz")
                assert response.status_code == 200, response.text
                sent += 1
                client_port = _client_port(response)
                workers = _children(servers.pid(0))
                owner = next(
                    (pid for pid in workers if client_port in _client_ports(pid, port)), None
                )
                assert owner is not None, f"no worker of {workers} holds port {client_port}"
                if owner in clients:
                    await client.aclose()
                    await asyncio.sleep(0.05)  # the other worker may still be starting
                else:
                    clients[owner] = client
            # More requests through both workers, then scrapes through both, several times.
            for _ in range(3):
                for client in clients.values():
                    for _ in range(5):
                        assert (await client.get("/healthz")).status_code == 200
                        sent += 1
                # A worker counts a request right after sending its answer: let the last one land.
                await _settled(next(iter(clients.values())), sent)
                scrapes = [await client.get("/metrics") for client in clients.values()]
                for owner, scrape in zip(clients, scrapes, strict=True):
                    assert scrape.status_code == 200
                    assert _healthz_count(scrape.text) == sent, (owner, sent)
        finally:
            await asyncio.gather(*(client.aclose() for client in clients.values()))


def _workers(pid: int) -> set[int]:
    """uvicorn's workers among the children of `pid` (not multiprocessing's resource tracker)."""
    found: set[int] = set()
    for child in _children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(child)
        except OSError:  # gone meanwhile
            continue
    return found


def _by_pid(text: str, name: str) -> dict[int, float]:
    """pid -> value of the `name` samples; an unlabelled one (one process's) fails the test."""
    found: dict[int, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                assert set(sample.labels) == {"pid"}, sample
                found[int(sample.labels["pid"])] = sample.value
    return found


async def _scrape_until(url: str, expected: Callable[[], set[int]]) -> str:
    """Scrape over a new connection each time (whichever live worker takes it) until the
    resident memory series are those of the `expected()` pids; the last scrape's text."""
    deadline = time.monotonic() + DEADLINE
    while True:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            response = await client.get("/metrics")
        assert response.status_code == 200, response.text
        reported = set(_by_pid(response.text, "process_resident_memory_bytes"))
        wanted = expected()
        if reported == wanted and len(wanted) == 2:
            return response.text
        assert time.monotonic() < deadline, f"reported {sorted(reported)}, workers {wanted}"
        await asyncio.sleep(0.2)


async def test_metrics_report_the_process_figures_of_each_live_worker(settings: Settings) -> None:
    async with running_servers(settings, count=1, args=("--workers", "2")) as servers:
        server = servers.pid(0)
        async with httpx.AsyncClient(base_url=servers[0], timeout=10) as client:
            for _ in range(10):
                assert (await client.get("/healthz")).status_code == 200
        text = await _scrape_until(servers[0], lambda: _workers(server))
        workers = _workers(server)
        for name in ("process_resident_memory_bytes", "process_open_fds"):
            figures = _by_pid(text, name)
            assert set(figures) == workers, (name, figures)
            assert all(value > 0 for value in figures.values()), (name, figures)
        for name in ("process_cpu_seconds_total", "process_max_fds"):
            assert set(_by_pid(text, name)) == workers, name
        assert "python_info{" in text  # one interpreter for all the workers

        # A worker killed outright (no exit code of ours runs) leaves the series; uvicorn starts
        # another in its place, which joins them.
        dead = min(workers)
        os.kill(dead, signal.SIGKILL)
        text = await _scrape_until(servers[0], lambda: _workers(server) - {dead})
        assert dead not in _by_pid(text, "process_open_fds")
        assert set(_by_pid(text, "process_open_fds")) == _workers(server)
