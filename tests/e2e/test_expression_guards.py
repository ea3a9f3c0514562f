"""Acceptance: hostile definitions are refused on save, fast, naming the step and field; outbound
requests to internal addresses are refused before any connection is made.

Expressions: a 100 KB source, 10,000 nested parentheses, deeply nested comprehensions and the
same hidden in other fields are each a 400 `invalid_definition` naming `steps.<id>.<field>`,
refused in well under a second, with nothing saved (nor changed, nor run as a workflow). A
`forEach` without `maxIterations` is refused the same way.

`httpRequest`: a literal URL is not resolved on save (the allow-list is the running server's), so
`http://127.0.0.1/`, `http://169.254.169.254/...` and `http://10.0.0.1/` are saved and refused at
call time with 400 `ssrf_blocked` naming the step. No traffic may leave the machine: these tests
replace httpx's connection layer with a spy that records every target and connects to nothing
but an allow-listed 127.0.0.1 test server, and a listener on 127.0.0.1 shows that nothing reached
it when it was not allow-listed.
"""

import asyncio
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from apiforge.engine.service import build_engine_state
from tests.e2e._apps import new_api, new_app, set_step
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, register

SAVE_BOUND_SECONDS = 1.0  # a sanity bound for a refusal, not a benchmark
# Each timed request is sent this many times and the fastest counts: a slow guard is slow every
# time, while a busy test machine (or a garbage collection) only delays some of the requests.
ATTEMPTS = 3
LONG = "'" + "a" * 100_000 + "'"  # 100 KB string literal
LONG_SUM = "1 + " * 25_000 + "1 == 2"  # 100 KB of arithmetic
PARENS_10K = "(" * 10_000 + "1" + ")" * 10_000
PARENS_2K = "(" * 2_000 + "1" + ")" * 2_000  # within the length cap: the nesting guard refuses
COMPREHENSIONS = "[1].all(a, [1].all(b, [1].all(c, true)))"
MIXED_COMPREHENSIONS = "[1].map(a, [1].filter(b, [1].exists(c, c == a + b)))"
TOO_LONG = "limited to 4096 characters"
TOO_DEEP = "nest deeper than 32 levels"
TOO_MANY_COMPREHENSIONS = "comprehensions (all, exists, exists_one, filter, map) nest deeper"


def expr(source: str) -> dict[str, str]:
    return {"expr": source}


def loop(step_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "type": "forEach", "items": [1, 2], "steps": [], **extra}


# (case id, hostile steps, the field named, a fragment of the message)
HOSTILE: list[tuple[str, list[dict[str, Any]], str, str]] = [
    ("100KB-literal", [set_step("s", expr(LONG))], "steps.s.value", TOO_LONG),
    (
        "100KB-arithmetic",
        [{"id": "check", "type": "assert", "condition": expr(LONG_SUM)}],
        "steps.check.condition",
        TOO_LONG,
    ),
    ("10000-parens", [set_step("s", expr(PARENS_10K))], "steps.s.value", TOO_LONG),
    ("2000-parens", [set_step("s", expr(PARENS_2K))], "steps.s.value", TOO_DEEP),
    (
        "nested-lists-in-loop-items",
        [loop("each", items=expr("[" * 40 + "]" * 40), maxIterations=10)],
        "steps.each.items",
        TOO_DEEP,
    ),
    ("deep-all", [set_step("s", expr(COMPREHENSIONS))], "steps.s.value", TOO_MANY_COMPREHENSIONS),
    (
        "deep-map-filter-exists",
        [set_step("ok", 1), set_step("s", {"nested": [expr(MIXED_COMPREHENSIONS)]})],
        "steps.s.value.nested.0",
        TOO_MANY_COMPREHENSIONS,
    ),
    (
        "in-a-filter-operand",
        [
            {
                "id": "posts",
                "type": "getMany",
                "collection": "posts",
                "filter": {"_and": [{"title": {"_eq": expr(PARENS_2K)}}]},
            }
        ],
        "steps.posts.filter._and.0.title._eq",
        TOO_DEEP,
    ),
    (
        "in-an-http-url",
        [{"id": "fetch", "type": "httpRequest", "url": expr(COMPREHENSIONS)}],
        "steps.fetch.url",
        TOO_MANY_COMPREHENSIONS,
    ),
    ("forEach-without-maxIterations", [loop("each")], "steps.each.maxIterations", "required"),
    (
        "forEach-without-maxIterations-nested",
        [{"id": "gate", "type": "if", "condition": True, "then": [loop("inner")]}],
        "steps.inner.maxIterations",
        "required",
    ),
    (
        "forEach-maxIterations-over-the-cap",
        [loop("each", maxIterations=10_001)],
        "steps.each.maxIterations",
        "10000",
    ),
    (
        "forEach-maxIterations-zero",
        [loop("each", maxIterations=0)],
        "steps.each.maxIterations",
        "1",
    ),
]


@dataclass
class Builder:
    user: User
    app_id: str
    ok_id: str  # an API saved before the attack, which must stay as it was

    @property
    def apis_path(self) -> str:
        return f"/api/v1/apps/{self.app_id}/apis"


async def builder(client: AsyncClient) -> Builder:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    body = {"appId": app_id, "name": "posts", "fields": [{"name": "title", "type": "string"}]}
    data_of(await client.post("/api/v1/datasets", json=body, headers=user.headers))
    ok_id = await new_api(client, user.headers, app_id, "ok", steps=[set_step("s", 1)])
    return Builder(user, app_id, ok_id)


async def timed(
    send: Callable[[], Awaitable[httpx.Response]],
) -> tuple[list[httpx.Response], float]:
    """Every answer to `ATTEMPTS` sends, and the fastest one's time (perf_counter)."""
    responses, fastest = [], float("inf")
    for _ in range(ATTEMPTS):
        started = time.perf_counter()
        responses.append(await send())
        fastest = min(fastest, time.perf_counter() - started)
    return responses, fastest


def refused(responses: list[httpx.Response], field_name: str, fragment: str) -> None:
    for response in responses:
        data = assert_error(response, 400, "invalid_definition")
        assert data["errors"] == [{"field": field_name, "message": data["errors"][0]["message"]}]
        assert fragment in data["errors"][0]["message"], data
        assert response.json()["message"].startswith(field_name)


@pytest.mark.parametrize(
    ("steps", "field_name", "fragment"),
    [pytest.param(steps, name, fragment, id=case) for case, steps, name, fragment in HOSTILE],
)
async def test_hostile_definitions_are_refused_fast_and_nothing_is_saved(
    client: AsyncClient, steps: list[dict[str, Any]], field_name: str, fragment: str
) -> None:
    b = await builder(client)
    h = b.user.headers
    listed_before = data_of(await client.get(b.apis_path, headers=h))
    ok_before = data_of(await client.get(f"{b.apis_path}/{b.ok_id}", headers=h))

    body = {"api": "hostile", "steps": steps, "price": 1000}
    responses, elapsed = await timed(lambda: client.post(b.apis_path, json=body, headers=h))
    refused(responses, field_name, fragment)
    assert elapsed <= SAVE_BOUND_SECONDS, elapsed

    # Changing a saved API to it is refused the same way, and the API is left as it was.
    path = f"{b.apis_path}/{b.ok_id}"
    responses, elapsed = await timed(lambda: client.patch(path, json={"steps": steps}, headers=h))
    refused(responses, field_name, fragment)
    assert elapsed <= SAVE_BOUND_SECONDS, elapsed

    # Nor can it be run ad hoc.
    run = {"appId": b.app_id, "steps": steps}
    responses, elapsed = await timed(lambda: client.post("/api/v1/workflows", json=run, headers=h))
    refused(responses, field_name, fragment)
    assert elapsed <= SAVE_BOUND_SECONDS, elapsed

    assert data_of(await client.get(b.apis_path, headers=h)) == listed_before
    assert data_of(await client.get(f"{b.apis_path}/{b.ok_id}", headers=h)) == ok_before


async def test_deeply_nested_json_in_a_step_is_refused_and_nothing_is_saved(
    client: AsyncClient,
) -> None:
    """Not an expression but a literal nested 500 deep: refused as a whole, not a crash."""
    b = await builder(client)
    h = b.user.headers
    nested = "[" * 500 + "1" + "]" * 500
    raw = '{"api": "hostile", "steps": [{"id": "s", "type": "set", "value": ' + nested + "}]}"
    headers = {**h, "Content-Type": "application/json"}
    responses, elapsed = await timed(lambda: client.post(b.apis_path, content=raw, headers=headers))
    for response in responses:
        data = assert_error(response, 400, "invalid_definition")
        assert data["errors"][0]["field"].startswith("steps")
    assert elapsed <= SAVE_BOUND_SECONDS, elapsed
    listed = data_of(await client.get(b.apis_path, headers=h))
    assert [a["api"] for a in listed["list"]] == ["ok"]


# --- httpRequest to internal addresses --------------------------------------------------------


@dataclass
class ConnectionSpy:
    """Stands in for httpx's connection layer: records every target, connects only to
    127.0.0.1 when `local_allowed`, refuses everything else without touching the network."""

    local_allowed: bool = False
    hosts: list[str] = field(default_factory=list)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> ConnectionSpy:
    recorder = ConnectionSpy()
    original = httpx.AsyncHTTPTransport.handle_async_request

    async def handle(self: httpx.AsyncHTTPTransport, request: httpx.Request) -> httpx.Response:
        recorder.hosts.append(request.url.host)
        if recorder.local_allowed and request.url.host == "127.0.0.1":
            return await original(self, request)
        raise httpx.ConnectError("the test lets no connection leave", request=request)

    monkeypatch.setattr(httpx.AsyncHTTPTransport, "handle_async_request", handle)
    return recorder


Handler = Callable[[str], bytes]


@dataclass
class LocalServer:
    port: int
    paths: list[str]


@asynccontextmanager
async def local_server(answer: Handler) -> AsyncIterator[LocalServer]:
    """An HTTP/1.1 server on 127.0.0.1 that records each request's path and answers it."""
    paths: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        paths.append(path)
        writer.write(answer(path))
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield LocalServer(port, paths)
    finally:
        server.close()
        await server.wait_closed()


def http_answer(status: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def call(client: AsyncClient, user: User, app_id: str, api: str) -> httpx.Response:
    body = {"appId": app_id, "api": api, "version": "dev"}
    return await client.post("/api/v1/invocations", json=body, headers=user.headers)


async def test_http_request_to_internal_addresses_is_refused_before_connecting(
    client: AsyncClient, spy: ConnectionSpy
) -> None:
    user = await register(client)
    app_id = await new_app(client, user.headers)
    async with local_server(lambda path: http_answer("200 OK", {})) as listener:
        urls = [
            f"http://127.0.0.1:{listener.port}/",
            "http://127.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.1/",
        ]
        for index, url in enumerate(urls):
            api = f"fetch{index}"
            step = {"id": "fetch", "type": "httpRequest", "url": url, "timeout": 10}
            # Saved: a literal URL is checked when the call runs, against the server's
            # allow-list, and each redirect hop again.
            await new_api(client, user.headers, app_id, api, steps=[step], price=5)
            responses, elapsed = await timed(functools.partial(call, client, user, app_id, api))
            for response in responses:
                data = assert_error(response, 400, "ssrf_blocked")
                assert data["stepId"] == "fetch"
                assert "not a public address" in response.json()["message"]
            # Refused at once: no connection attempt waiting for its 10 s timeout.
            assert elapsed <= SAVE_BOUND_SECONDS, (url, elapsed)
        assert listener.paths == []
    assert spy.hosts == []


async def test_redirect_to_an_internal_address_is_refused(
    client: AsyncClient, app: FastAPI, spy: ConnectionSpy
) -> None:
    """An allow-listed server (the operator trusts 127.0.0.1 here) redirects to the metadata
    service and to a private address: the hop is checked again and refused."""
    spy.local_allowed = True
    # The operator's allow-list lives on the process's engine services (no setting yet).
    state = getattr(app.state, "engine_state", None)
    if state is None:
        state = build_engine_state(app.state.engine, app.state.settings)
        app.state.engine_state = state
    state.services = replace(state.services, http_allow_hosts=frozenset({"127.0.0.1"}))
    user = await register(client)
    app_id = await new_app(client, user.headers)
    targets = {
        "/metadata": "http://169.254.169.254/latest/meta-data",
        "/private": "http://10.0.0.1/admin",
        "/loopback": "http://[::1]/",
    }

    def answer(path: str) -> bytes:
        if path == "/ok":
            return http_answer("200 OK", {"Content-Type": "application/json"}, b'{"fine": 1}')
        return http_answer("302 Found", {"Location": targets[path]})

    async with local_server(answer) as server:
        base = f"http://127.0.0.1:{server.port}"
        await new_api(
            client,
            user.headers,
            app_id,
            "control",
            steps=[{"id": "fetch", "type": "httpRequest", "url": f"{base}/ok"}],
            price=5,
        )
        # The trusted server is reachable: the refusals below are the guard, not the network.
        reached = data_of(await call(client, user, app_id, "control"))
        assert (reached["fetch"]["status"], reached["fetch"]["body"]) == (200, {"fine": 1})
        for index, path in enumerate(targets):
            api = f"hop{index}"
            step = {"id": "fetch", "type": "httpRequest", "url": f"{base}{path}"}
            await new_api(client, user.headers, app_id, api, steps=[step], price=5)
            data = assert_error(await call(client, user, app_id, api), 400, "ssrf_blocked")
            assert data["stepId"] == "fetch"
        assert server.paths == ["/ok", *targets]
    assert spy.hosts == ["127.0.0.1"] * (1 + len(targets))
