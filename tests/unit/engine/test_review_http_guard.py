"""Review: `httpRequest` keeps its answer cap in memory too, not only in the result.

A compressed answer is inflated a network read at a time; the cap (`maxResponseBytes`, 1 MB at
most) must bound what is inflated, or a 500-byte answer (gzip of gzip of 200 MB of zeros) makes
the server allocate 200 MB before the step notices it is too large.
"""

import asyncio
import gzip
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from apiforge.engine.base import StepFailedError
from apiforge.tools.netguard import AllowList, BlockedTargetError, check_url

from ._steps_support import compile_step, make_context, make_services

ZEROS = 200 * 1024 * 1024
INNER = gzip.compress(b"\0" * ZEROS, 9)  # ~200 KB
BOMB = gzip.compress(INNER, 9)  # ~500 bytes


def _deflate(data: bytes, raw: bool = False) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS if raw else zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


Answer = tuple[bytes, str]  # body, Content-Encoding


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Answer], str]]:
    """`serve((body, encoding))` → a URL on 127.0.0.1 answering with exactly that body."""
    answers: dict[str, Answer] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = (await reader.readline()).decode()
        while (await reader.readline()).strip():
            pass
        body, encoding = answers[line.split(" ")[1]]
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            f"Content-Encoding: {encoding}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    def add(answer: Answer) -> str:
        path = f"/{len(answers)}"
        answers[path] = answer
        return f"http://127.0.0.1:{port}{path}"

    yield add
    server.close()
    await server.wait_closed()


async def _fetch(url: str, **config: Any) -> Any:
    step = compile_step({"id": "call", "type": "httpRequest", "url": url, **config})
    ctx = make_context(services=make_services(allow_hosts=frozenset({"127.0.0.1"})))
    return await step.run(ctx)


@pytest.mark.parametrize("encoding", ["gzip, gzip", "gzip,gzip"])
async def test_a_compression_bomb_is_refused_without_inflating_it(
    serve: Callable[[Answer], str], encoding: str
) -> None:
    url = serve((BOMB, encoding))
    tracemalloc.start()
    try:
        with pytest.raises(StepFailedError) as caught:
            await _fetch(url)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "upstream_response_too_large"
    assert peak < 16 * 1024 * 1024, f"{peak / 2**20:.0f} MB allocated for a 1 MB cap"


async def test_a_single_gzip_layer_is_cut_at_the_cap(serve: Callable[[Answer], str]) -> None:
    url = serve((INNER, "gzip"))
    tracemalloc.start()
    try:
        with pytest.raises(StepFailedError) as caught:
            await _fetch(url, maxResponseBytes=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "upstream_response_too_large"
    assert peak < 4 * 1024 * 1024, f"{peak / 2**20:.0f} MB allocated for a 1,000-byte cap"


@pytest.mark.parametrize(
    ("body", "encoding"),
    [
        (gzip.compress(b"hello there"), "gzip"),
        (_deflate(b"hello there"), "deflate"),
        (_deflate(b"hello there", raw=True), "deflate"),  # raw deflate, as some servers send
        (gzip.compress(gzip.compress(b"hello there")), "gzip, gzip"),
        (b"hello there", "identity"),
        (b"hello there", "unknown-coding"),  # passed through as httpx does
    ],
)
async def test_compressed_answers_within_the_cap_are_inflated(
    serve: Callable[[Answer], str], body: bytes, encoding: str
) -> None:
    out = await _fetch(serve((body, encoding)))
    assert out["status"] == 200
    assert out["body"] == "hello there"


async def test_an_answer_exactly_at_the_cap_passes(serve: Callable[[Answer], str]) -> None:
    out = await _fetch(serve((gzip.compress(b"z" * 1000), "gzip")), maxResponseBytes=1000)
    assert out["body"] == "z" * 1000
    with pytest.raises(StepFailedError) as caught:
        await _fetch(serve((gzip.compress(b"z" * 1001), "gzip")), maxResponseBytes=1000)
    assert caught.value.reason == "upstream_response_too_large"


async def test_a_corrupt_compressed_answer_is_an_upstream_error(
    serve: Callable[[Answer], str],
) -> None:
    with pytest.raises(StepFailedError) as caught:
        await _fetch(serve((b"\x1f\x8bnot really gzip", "gzip")))
    assert caught.value.reason == "upstream_error"
    assert caught.value.status == 502


@pytest.mark.parametrize("address", ["fec0::1", "fec0:0:0:1::10", "feff::1"])
async def test_ipv6_site_local_answers_are_refused(address: str) -> None:
    """fec0::/10, the deprecated IPv6 "private" range, is still routed inside some networks."""

    async def resolver(host: str, port: int) -> list[str]:
        return [address]

    with pytest.raises(BlockedTargetError):
        await check_url("http://service.example/", AllowList(), resolver)
    with pytest.raises(BlockedTargetError):
        await check_url(f"http://[{address}]/", AllowList(), resolver)
