"""One pipelined Redis connection for the gateway's per-call command (traffic admission).

Why not redis-py here: through its asyncio client a single `EVALSHA` costs about 200 µs of CPU
(pool checkout, command packing, retry wrapper, stream reads), measured in the process that
serves the calls: as much as the rest of a limited call's traffic stage put together. This
line writes commands packed by hiredis onto one connection, and hiredis's reader parses the
replies, which come back in order: each caller awaits one future. About 20 to 40 µs a call.
The commands of one turn of the event loop (the admissions of every request that reached the
traffic stage in it) go out in one write, so under load a `send` serves several calls and
their replies come back in as few reads.

Everything else (pipelines of releases, tokens, health checks) stays on redis-py. The line
speaks to the same server as the client it is built from (host or socket, database, user and
password); for TLS it is not built and callers keep redis-py.

Failures surface as redis-py's exceptions, so the failure policies that handle redis-py's
handle these: a refused or lost connection is `ConnectionError` (every call in flight on it
fails; the next call connects again), a reply later than the socket timeout is `TimeoutError`
(the connection is dropped: a late reply must not answer another call), an error reply is
`ResponseError`.
"""

import asyncio
import hashlib
from collections import deque
from typing import Any, cast

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Waiting = deque[tuple[asyncio.Future[Any], float]]  # (the caller's future, when it was sent)


def _pack(command: tuple[str | int | bytes, ...]) -> bytes:
    """One command in Redis's wire format (hiredis's stubs type the tuple as one element)."""
    packed: bytes = hiredis.pack_command(command)  # type: ignore[arg-type]
    return packed


class _Wire(asyncio.Protocol):
    """The connection's protocol: replies are matched to callers in the order sent."""

    def __init__(self, line: "RedisLine") -> None:
        self.line = line
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: Waiting = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None  # why it failed: nothing more is sent on it
        self.outgoing: list[bytes] = []  # this turn's commands, written at its end (`flush`)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        try:
            while (reply := reader.gets()) is not False:
                future = waiting.popleft()[0]
                if not future.done():  # its caller may have gone (cancelled)
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked
            self.fail(RedisConnectionError(f"Redis sent an unreadable reply: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"Connection to Redis lost: {exc or 'closed'}"))

    def flush(self) -> None:
        """Write the commands queued in this turn of the event loop, all at once."""
        outgoing, self.outgoing = self.outgoing, []
        if outgoing and self.lost is None and self.transport is not None:
            self.transport.write(outgoing[0] if len(outgoing) == 1 else b"".join(outgoing))

    def fail(self, exc: Exception) -> None:
        """Every call in flight fails; the line connects again on the next call."""
        self.lost = self.lost or exc
        self.line._forget(self)
        waiting, self.waiting = self.waiting, deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()


class RedisLine:
    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 1.0,
        connect_timeout: float = 1.0,
    ) -> None:
        self.host, self.port, self.path = host, port, path
        self.db, self.username, self.password = db, username, password
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._wire: _Wire | None = None
        self._connecting = asyncio.Lock()
        self._failures = 0  # connection attempts that failed (one at a time: `_connecting`)
        self._failure = ""  # why the last one failed
        self._watch: asyncio.TimerHandle | None = None
        self._closed = False
        self._shas: dict[str, str] = {}

    @classmethod
    def for_client(cls, redis: Redis) -> "RedisLine | None":
        """A line to the server `redis` talks to; None over TLS (left to redis-py)."""
        pool = redis.connection_pool
        if issubclass(pool.connection_class, SSLConnection):
            return None
        kw = pool.connection_kwargs
        unix = issubclass(pool.connection_class, UnixDomainSocketConnection)
        return cls(
            host=kw.get("host", "127.0.0.1"),
            port=int(kw.get("port", 6379)),
            path=kw.get("path") if unix else None,
            db=int(kw.get("db") or 0),
            username=kw.get("username"),
            password=kw.get("password"),
            timeout=kw.get("socket_timeout") or 1.0,
            connect_timeout=kw.get("socket_connect_timeout") or 1.0,
        )

    async def call(self, *args: str | int | bytes) -> Any:
        """Send one command and return its reply (an error reply raises `ResponseError`)."""
        wire = self._wire or await self._connect()
        reply = await self._send(wire, _pack(args))
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    async def run_script(self, script: str, keys: list[str], args: list[str | int]) -> Any:
        """`EVALSHA`, falling back to `EVAL` once when the server does not know the script
        (after a restart or `SCRIPT FLUSH`); `EVAL` caches it again for the next calls."""
        sha = self._shas.get(script)
        if sha is None:
            sha = self._shas[script] = hashlib.sha1(
                script.encode(), usedforsecurity=False
            ).hexdigest()
        wire = self._wire or await self._connect()
        reply = await self._send(wire, _pack(("EVALSHA", sha, len(keys), *keys, *args)))
        if isinstance(reply, ResponseError) and str(reply).startswith("NOSCRIPT"):
            wire = self._wire or await self._connect()
            command = ("EVAL", script, len(keys), *keys, *args)
            reply = await self._send(wire, _pack(command))
        if isinstance(reply, ResponseError):
            raise reply
        return reply

    def _send(self, wire: _Wire, packed: bytes) -> "asyncio.Future[Any]":
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if wire.lost is not None or wire.transport is None:
            future.set_exception(wire.lost or RedisConnectionError("Not connected to Redis"))
            return future
        wire.outgoing.append(packed)
        if len(wire.outgoing) == 1:
            loop.call_soon(wire.flush)
        wire.waiting.append((future, loop.time()))
        if self._watch is None:
            self._watch = loop.call_later(self.timeout, self._check)
        return future

    def _check(self) -> None:
        """The socket timeout, for the whole line: one timer, not one per call. A reply later
        than the timeout drops the connection and fails what waits on it."""
        self._watch = None
        wire = self._wire
        if wire is None or not wire.waiting:
            return
        loop = asyncio.get_running_loop()
        due = wire.waiting[0][1] + self.timeout
        if due <= loop.time():
            wire.fail(RedisTimeoutError(f"Redis did not answer within {self.timeout} s"))
        else:
            self._watch = loop.call_at(due, self._check)

    async def _connect(self) -> _Wire:
        seen = self._failures
        async with self._connecting:
            if self._closed:
                raise RedisConnectionError("The Redis line is closed")
            if self._wire is not None:
                return self._wire
            if self._failures != seen:
                # An attempt failed while this call waited for the lock: so does this call, at
                # once. Trying again would queue every waiting call behind one more connect
                # timeout each (while Redis's connects hung, the Nth call waited N seconds).
                raise RedisConnectionError(self._failure)
            loop = asyncio.get_running_loop()
            hello: list[tuple[str | int, ...]] = []
            if self.password is not None:
                user = () if self.username is None else (self.username,)
                hello.append(("AUTH", *user, self.password))
            if self.db:
                hello.append(("SELECT", self.db))
            wire: _Wire | None = None
            try:
                async with asyncio.timeout(self.connect_timeout):
                    if self.path is not None:
                        _, wire = await loop.create_unix_connection(lambda: _Wire(self), self.path)
                    else:
                        _, wire = await loop.create_connection(
                            lambda: _Wire(self), self.host, self.port
                        )
                    sent = [self._send(wire, _pack(command)) for command in hello]
                    replies = await asyncio.gather(*sent)
            except (OSError, TimeoutError) as exc:
                if wire is not None:  # connected, but the greeting timed out
                    wire.fail(RedisConnectionError("Redis did not answer the greeting"))
                self._failed(f"Cannot connect to Redis: {exc!r}")
                raise RedisConnectionError(self._failure) from exc
            refused = [reply for reply in replies if isinstance(reply, ResponseError)]
            if refused or wire.lost is not None:
                wire.fail(RedisConnectionError(f"Redis refused the connection: {refused}"))
                self._failed("Redis refused the connection")
                raise wire.lost or RedisConnectionError(self._failure)
            self._wire = wire
            return wire

    def _failed(self, why: str) -> None:
        self._failures += 1
        self._failure = why

    def _forget(self, wire: _Wire) -> None:
        if self._wire is wire:
            self._wire = None

    async def close(self) -> None:
        self._closed = True
        async with self._connecting:
            pass
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._wire is not None:
            wire, self._wire = self._wire, None
            assert wire.transport is not None
            wire.transport.close()
