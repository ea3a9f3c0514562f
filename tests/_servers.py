"""Real apiforge server processes for tests that need more than one process (shared limits,
idempotency across nodes, Redis outages): `running_servers(settings)` starts them on free ports
of 127.0.0.1, configured by environment from the test's `Settings`, and stops them at exit."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from apiforge.core.settings import Settings

READY_TIMEOUT = 30.0
# The console script installed next to the running interpreter (the project's virtualenv).
APIFORGE = Path(sys.executable).with_name("apiforge")
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A port nobody listens on right now (the kernel's choice; bound and released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def settings_env(settings: Settings) -> dict[str, str]:
    """`APIFORGE_*` variables that rebuild `settings` in another process (lists as JSON, as
    pydantic-settings reads complex values)."""
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None or name in {"host", "port"}:
            continue
        if isinstance(value, (list, dict)):
            text = json.dumps(value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        env[f"APIFORGE_{name.upper()}"] = text
    return env


class _Server:
    def __init__(
        self, port: int, env: Mapping[str, str], cwd: Path, args: Sequence[str] = ()
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        # Kept open for the server's lifetime and closed by close(): no `with` can span it.
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(  # noqa: S603 - our own console script, fixed arguments
            [str(APIFORGE), "serve", "--port", str(port), *args],
            env=dict(env),
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=self.stderr,
        )

    def output(self, tail: int | None = 8000) -> str:
        """stderr so far. `pread` leaves the file offset alone: the server shares it, and moving
        it would make the server overwrite what it wrote."""
        fd = self.stderr.fileno()
        text = os.pread(fd, os.fstat(fd).st_size, 0).decode(errors="replace")
        return text if tail is None else text[-tail:]

    async def wait_ready(self, deadline: float) -> None:
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"apiforge on port {self.port} exited with {self.process.returncode}:\n"
                        + self.output()
                    )
                try:
                    response = await http.get(self.url + "/readyz")
                    if response.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"apiforge on port {self.port} not ready in {READY_TIMEOUT}s:\n"
                        + self.output()
                    )
                await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait)

    def close(self) -> None:
        self.stderr.close()


class Servers(list[str]):
    """The base URLs, plus what a test may need of the processes behind them."""

    def __init__(self, servers: list[_Server]) -> None:
        super().__init__(server.url for server in servers)
        self._servers = servers

    def kill(self, index: int) -> None:
        """SIGKILL one server mid-whatever (a crash: no `finally` runs in it)."""
        self._servers[index].process.kill()
        self._servers[index].process.wait()

    def alive(self, index: int) -> bool:
        return self._servers[index].process.poll() is None

    def output(self, index: int) -> str:
        """What the server wrote on stderr so far (its JSON log lines)."""
        return self._servers[index].output(tail=None)

    def pid(self, index: int) -> int:
        """The `apiforge serve` process (under `--workers N`, the parent of the workers)."""
        return self._servers[index].process.pid


async def _environment(
    settings: Settings, extra_env: Mapping[str, str] | None
) -> tuple[dict[str, Any], Path]:
    """The environment and working directory of a server process on `settings`."""
    env: dict[str, Any] = {
        key: value for key, value in os.environ.items() if not key.startswith("APIFORGE_")
    }
    env.update(settings_env(settings))
    env.setdefault("APIFORGE_LOG_JSON", "true")
    env.update(extra_env or {})
    # The processes run in the data directory so no stray `.env` of the checkout is read.
    cwd = Path(settings.data_dir)
    await asyncio.to_thread(cwd.mkdir, parents=True, exist_ok=True)
    return env, cwd


async def killed_while_starting(settings: Settings, after: float) -> None:
    """Start `apiforge serve` on `settings` and SIGKILL it `after` seconds later, whether it
    was still starting or already serving (a crash during startup)."""
    env, cwd = await _environment(settings, None)
    server = _Server(free_port(), env, cwd)
    try:
        await asyncio.sleep(after)
        server.process.kill()
        await asyncio.to_thread(server.process.wait)
    finally:
        server.close()


@asynccontextmanager
async def running_servers(
    settings: Settings,
    count: int = 2,
    extra_env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
) -> AsyncIterator[Servers]:
    """Base URLs of `count` apiforge processes sharing `settings`' database (and Redis when
    set), each started as `apiforge serve --port P *args`. Their stderr is attached to the
    failure when one dies, never becomes ready, or the body of the `async with` raises."""
    env, cwd = await _environment(settings, extra_env)
    servers = [_Server(free_port(), env, cwd, args) for _ in range(count)]
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        await asyncio.gather(*(server.wait_ready(deadline) for server in servers))
        try:
            yield Servers(servers)
        except BaseException as exc:
            logs = "\n".join(
                f"--- apiforge :{server.port} (exit code {server.process.poll()}) stderr ---\n"
                + server.output()
                for server in servers
            )
            if isinstance(exc, Exception):
                exc.add_note(logs)
            raise
    finally:
        await asyncio.gather(*(server.stop() for server in servers))
        for server in servers:
            server.close()
