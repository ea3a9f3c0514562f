"""The lean Redis line (core/redis_line.py) against a redis-server of the test's own: replies
reach their callers in order, under concurrency and when callers go away; scripts survive a
script flush; a slow, dead, restarted or password-protected server fails the way redis-py's
failures do, and the line recovers by itself."""

import asyncio
from collections.abc import AsyncIterator

import pytest
import uvloop
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from apiforge.core.redis_line import RedisLine
from apiforge.core.settings import Settings
from apiforge.core.shared import SOCKET_TIMEOUT_SECONDS, make_redis
from tests.e2e._traffic import RedisServer, redis_server

SCRIPT = "return {KEYS[1], tonumber(ARGV[1]) + 1}"
# The timeouts of the lines whose tests check which reply reaches whom, not how fast: on a
# loaded CI machine a connect or a batch of replies now and then takes over the 1 s default.
PATIENT = 10.0


def patient(line: RedisLine) -> RedisLine:
    line.timeout = line.connect_timeout = PATIENT
    return line


@pytest.fixture
async def server() -> AsyncIterator[RedisServer]:
    async with redis_server() as started:
        yield started


@pytest.fixture
async def line(server: RedisServer) -> AsyncIterator[RedisLine]:
    client = make_redis(Settings(redis_url=server.url))
    assert client is not None
    built = RedisLine.for_client(client)
    await client.aclose()
    assert built is not None
    assert built.timeout == built.connect_timeout == SOCKET_TIMEOUT_SECONDS  # the client's
    yield patient(built)
    await built.close()


async def test_concurrent_calls_each_get_their_own_reply(line: RedisLine) -> None:
    values = await asyncio.gather(*(line.call("INCR", "n") for _ in range(300)))
    assert sorted(values) == list(range(1, 301))
    echoed = await asyncio.gather(*(line.call("ECHO", f"m{i}") for i in range(300)))
    assert echoed == [f"m{i}".encode() for i in range(300)]


async def test_the_commands_of_one_turn_go_out_in_one_write(line: RedisLine) -> None:
    assert await line.run_script(SCRIPT, ["k"], [0]) == [b"k", 1]  # loaded: EVALSHA from now
    wire = line._wire
    assert wire is not None
    assert wire.transport is not None
    writes: list[bytes] = []
    write = wire.transport.write

    def counted(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        write(data)

    wire.transport.write = counted  # type: ignore[method-assign]
    replies = await asyncio.gather(*(line.call("ECHO", f"m{i}") for i in range(50)))
    assert replies == [f"m{i}".encode() for i in range(50)]
    assert len(writes) == 1  # fifty commands, queued in one turn, sent together
    scripts = [line.run_script(SCRIPT, [f"k{i}"], [i]) for i in range(20)]
    assert await asyncio.gather(*scripts) == [[f"k{i}".encode(), i + 1] for i in range(20)]
    assert len(writes) == 2


async def test_a_caller_that_goes_away_does_not_shift_the_replies(line: RedisLine) -> None:
    slow = asyncio.ensure_future(line.call("BLPOP", "nothing", "0.2"))
    after = asyncio.ensure_future(line.call("ECHO", "mine"))
    await asyncio.sleep(0.05)
    slow.cancel()
    assert await after == b"mine"
    assert await line.call("ECHO", "next") == b"next"


async def test_scripts_run_again_after_a_script_flush(line: RedisLine) -> None:
    assert await line.run_script(SCRIPT, ["k"], [41]) == [b"k", 42]
    await line.call("SCRIPT", "FLUSH")
    assert await line.run_script(SCRIPT, ["k"], [1]) == [b"k", 2]  # EVALSHA failed: EVAL
    assert await line.call("SCRIPT", "EXISTS", line._shas[SCRIPT]) == [1]


async def test_an_error_reply_raises_and_the_line_goes_on(line: RedisLine) -> None:
    await line.call("SET", "text", "abc")
    with pytest.raises(ResponseError):
        await line.call("INCR", "text")
    with pytest.raises(ResponseError):
        await line.run_script("return redis.call('INCR', KEYS[1])", ["text"], [])
    assert await line.call("GET", "text") == b"abc"


async def test_a_late_reply_times_out_and_the_next_call_reconnects(server: RedisServer) -> None:
    line = RedisLine(port=server.port, timeout=0.2, connect_timeout=PATIENT)
    try:
        with pytest.raises(RedisTimeoutError):
            await line.call("BLPOP", "nothing", "5")  # answered long after the timeout
        line.timeout = PATIENT  # no timer runs now: the reconnect need not beat a loaded machine
        assert await line.call("ECHO", "fresh") == b"fresh"
    finally:
        await line.close()


async def test_a_dead_server_fails_calls_and_a_restarted_one_is_used_again(
    server: RedisServer,
) -> None:
    line = RedisLine(port=server.port, timeout=PATIENT, connect_timeout=PATIENT)
    try:
        waiting = asyncio.ensure_future(line.call("BLPOP", "nothing", "5"))
        await asyncio.sleep(0.05)
        await server.stop()
        with pytest.raises(RedisConnectionError):
            await waiting  # in flight when the server died
        with pytest.raises(RedisConnectionError):
            await line.call("PING")  # refused while it is down
        await server.start()
        assert await line.call("PING") == b"PONG"
        assert await line.run_script(SCRIPT, ["k"], [1]) == [b"k", 2]  # a new server: EVAL
    finally:
        await line.close()


async def test_passwords_users_and_databases_come_from_the_client(server: RedisServer) -> None:
    admin = Redis(port=server.port)
    await admin.acl_setuser(
        "alice", enabled=True, passwords=["+s3cret"], keys="*", commands=["+@all"]
    )
    await admin.config_set("requirepass", "topsecret")
    await admin.aclose()
    for url, db in (
        (f"redis://:topsecret@127.0.0.1:{server.port}/3", 3),
        (f"redis://alice:s3cret@127.0.0.1:{server.port}/0", 0),
    ):
        client = make_redis(Settings(redis_url=url))
        assert client is not None
        line = RedisLine.for_client(client)
        assert line is not None
        assert line.db == db
        patient(line)
        try:
            await line.call("SET", "where", url)
            assert await client.get("where") == url.encode()  # the same database
            assert await client.dbsize() == 1
            await client.delete("where")
        finally:
            await line.close()
            await client.aclose()
    wrong = RedisLine(port=server.port, password="wrong")
    with pytest.raises(RedisConnectionError):
        await wrong.call("PING")
    await wrong.close()


async def test_tls_is_left_to_redis_py_and_a_closed_line_refuses(line: RedisLine) -> None:
    secure = make_redis(Settings(redis_url="rediss://127.0.0.1:6390/0"))
    assert secure is not None
    assert RedisLine.for_client(secure) is None
    await secure.aclose()
    assert await line.call("PING") == b"PONG"
    await line.close()
    with pytest.raises(RedisConnectionError):
        await line.call("PING")


def test_the_line_runs_on_uvloop_as_the_server_does() -> None:
    """uvloop's transports are not asyncio.Transport subclasses."""

    async def calls() -> list[object]:
        async with redis_server() as started:
            line = RedisLine(port=started.port, timeout=PATIENT, connect_timeout=PATIENT)
            try:
                replies = await asyncio.gather(*(line.call("INCR", "n") for _ in range(50)))
                return [*replies, await line.run_script(SCRIPT, ["u"], [1])]
            finally:
                await line.close()

    assert uvloop.run(calls()) == [*range(1, 51), [b"u", 2]]
