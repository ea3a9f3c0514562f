"""Review: `httpRequest` answers and hops a server may send, end to end through the gateway.

The upstream is a small server on 127.0.0.1 (the only allow-listed target), answering each path
with bytes the test chose; test host names resolve to it through the engine's resolver seam, so
nothing leaves the machine. Before the fixes here, answers the platform could not write back
(a `charset` naming no text encoding, JSON nested past the response writer's limit, integers
beyond 64 bits, lone surrogates) failed the call with a 500; a HEAD answer was refused for the
size it announced; cookies set by one host went to another host on the same address; stacked
content codings were unbounded; header values with surrounding spaces were a 502 blaming the
upstream; a `query` on a malformed URL was a 500.
"""

import asyncio
import dataclasses
import gzip
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient, Response

from apiforge.core.settings import Settings
from tests.e2e._apps import new_api, new_app
from tests.e2e._workspaces import assert_error, data_of
from tests.factories import User, app_client, register

PRICE = 1000  # above the seeded step costs: these tests are about the step, not pricing


def answer(
    body: bytes, content_type: str = "application/json", extra: str = "", status: str = "200 OK"
) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode() + body


@dataclass
class Upstream:
    """Canned answers by path; `/echo` answers with the request's headers as JSON."""

    port: int = 0
    answers: dict[str, bytes] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = (await reader.readline()).decode("latin-1")
        if not request_line:  # a client that gave up before sending anything
            writer.close()
            return
        headers: dict[str, str] = {}
        while line := (await reader.readline()).decode("latin-1").strip():
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        path = request_line.split(" ")[1]
        self.seen.append((path, headers))
        if path == "/echo":
            writer.write(answer(json.dumps(headers).encode()))
        else:
            writer.write(self.answers.get(path, answer(b"{}", status="404 Not Found")))
        await writer.drain()
        writer.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    local = Upstream()
    server = await asyncio.start_server(local.handle, "127.0.0.1", 0)
    local.port = server.sockets[0].getsockname()[1]
    yield local
    server.close()
    await server.wait_closed()


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[tuple[FastAPI, AsyncClient]]:
    allowed = settings.model_copy(update={"http_allow_hosts": ["127.0.0.1"]})
    async with app_client(allowed) as pair:
        yield pair


def resolve_test_names_locally(app: FastAPI) -> list[str]:
    """`*.test` names resolve to 127.0.0.1 (allow-listed by address), through the engine's
    resolver seam: two host names on one address, as on a CDN or shared hosting. Returns the
    list of names the engine resolves."""

    async def resolver(host: str, port: int) -> list[str]:
        resolved.append(host)
        assert host.endswith(".test"), host
        return ["127.0.0.1"]

    resolved: list[str] = []

    state = app.state.engine_state
    state.services = dataclasses.replace(
        state.services, extra={**state.services.extra, "http_resolver": resolver}
    )
    return resolved


async def fetcher(client: AsyncClient, **step: Any) -> tuple[User, str]:
    """A builder with one API `fetch(url, v)`: one httpRequest step configured by `step`."""
    user = await register(client)
    app_id = await new_app(client, user.headers)
    await new_api(
        client,
        user.headers,
        app_id,
        "fetch",
        params=[
            {"name": "url", "type": "string", "required": True},
            {"name": "v", "type": "string"},
        ],
        steps=[{"id": "get", "type": "httpRequest", "url": {"expr": "args.url"}, **step}],
        price=PRICE,
    )
    return user, app_id


async def fetch(client: AsyncClient, user: User, app_id: str, **args: Any) -> Response:
    payload = {"appId": app_id, "api": "fetch", "version": "dev", "args": args}
    return await client.post("/api/v1/invocations", json=payload, headers=user.headers)


DEEP = 300  # past the response writer's nesting limit (orjson: 254)
ANSWERS_TAKEN_AS_TEXT = {
    # Python knows these codecs, and fails when asked to decode text with them.
    "/rot13": (answer(b"hi", "text/plain; charset=rot13"), "hi"),
    "/base64": (answer(b"aGk=", "text/plain; charset=base64"), "aGk="),
    "/undefined": (answer(b"hi", "text/plain; charset=undefined"), "hi"),
    # A lone surrogate is valid Python text, and no response can carry it.
    "/escape": (answer(b"a\\ud800b", "text/plain; charset=unicode_escape"), "a\ufffdb"),
    # JSON the platform could not write back is given as the text it is.
    "/deep": (answer(b"[" * DEEP + b"]" * DEEP), "[" * DEEP + "]" * DEEP),
    "/deeper": (answer(b"[" * 100_000), "[" * 100_000),
    "/surrogate": (answer(b'{"a": "\\ud800"}'), '{"a": "\\ud800"}'),
    "/nan": (answer(b"[NaN, 1]"), "[NaN, 1]"),
}


@pytest.mark.parametrize("path", sorted(ANSWERS_TAKEN_AS_TEXT))
async def test_answers_the_platform_cannot_write_back_are_text_not_a_500(
    gateway: tuple[FastAPI, AsyncClient], upstream: Upstream, path: str
) -> None:
    _, client = gateway
    user, app_id = await fetcher(client)
    upstream.answers[path], text = ANSWERS_TAKEN_AS_TEXT[path]
    data = data_of(await fetch(client, user, app_id, url=upstream.url(path)))
    assert data["get"]["status"] == 200
    assert data["get"]["body"] == text


async def test_json_within_the_limits_is_json_and_huge_integers_are_numbers(
    gateway: tuple[FastAPI, AsyncClient], upstream: Upstream
) -> None:
    _, client = gateway
    user, app_id = await fetcher(client)
    nested = "[" * 100 + "]" * 100
    upstream.answers["/nested"] = answer(nested.encode())
    upstream.answers["/big"] = answer(
        b'{"id": 123456789012345678901234567890, "u": 18446744073709551615}'
    )
    data = data_of(await fetch(client, user, app_id, url=upstream.url("/nested")))
    assert json.dumps(data["get"]["body"], separators=(",", ":")) == nested
    data = data_of(await fetch(client, user, app_id, url=upstream.url("/big")))
    # Beyond 64 bits a number is read as a float, as JavaScript reads it; up to 2**64 exactly.
    assert data["get"]["body"] == {"id": 1.2345678901234568e29, "u": 18446744073709551615}


async def test_json_mode_refuses_what_it_cannot_read_with_a_502(
    gateway: tuple[FastAPI, AsyncClient], upstream: Upstream
) -> None:
    _, client = gateway
    user, app_id = await fetcher(client, responseType="json")
    upstream.answers["/deep"] = answer(b"[" * DEEP + b"]" * DEEP)
    upstream.answers["/deeper"] = answer(b"[" * 100_000)
    upstream.answers["/nan"] = answer(b"[NaN]")
    for path, message in (
        ("/deep", "the answer nests deeper than 100 levels"),
        ("/deeper", "the answer is not valid JSON"),
        ("/nan", "the answer is not valid JSON"),
    ):
        response = await fetch(client, user, app_id, url=upstream.url(path))
        data = assert_error(response, 502, "upstream_invalid_json")
        assert (data["stepId"], response.json()["message"]) == ("get", message)


async def test_a_head_answer_is_not_judged_by_the_size_it_announces(
    gateway: tuple[FastAPI, AsyncClient], upstream: Upstream
) -> None:
    _, client = gateway
    user, app_id = await fetcher(client, method="HEAD")
    # The size of a 5 MB file, asked for without its bytes: the usual reason to send a HEAD.
    upstream.answers["/file"] = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/zip\r\nContent-Length: 5000000\r\n"
        b"Connection: close\r\n\r\n"
    )
    data = data_of(await fetch(client, user, app_id, url=upstream.url("/file")))
    assert data["get"]["status"] == 200
    assert data["get"]["headers"]["content-length"] == "5000000"
    assert data["get"]["body"] == ""


async def test_cookies_set_by_one_host_do_not_follow_a_redirect_to_another_on_its_address(
    gateway: tuple[FastAPI, AsyncClient], upstream: Upstream
) -> None:
    app, client = gateway
    resolve_test_names_locally(app)
    user, app_id = await fetcher(client)
    for name, to in (("/away", "other.test"), ("/home", "api.test")):
        upstream.answers[name] = answer(
            b"",
            status="302 Found",
            extra=f"Set-Cookie: session=s3cr3t-{name[1:]}; Path=/\r\n"
            f"Location: {upstream.url('/echo', to)}\r\n",
        )
    away = data_of(await fetch(client, user, app_id, url=upstream.url("/away", "api.test")))
    assert away["get"]["body"]["host"] == f"other.test:{upstream.port}"
    assert "cookie" not in away["get"]["body"]
    # To its own origin, a cookie the answer set still goes on.
    home = data_of(await fetch(client, user, app_id, url=upstream.url("/home", "api.test")))
    assert home["get"]["body"]["cookie"] == "session=s3cr3t-home"


async def test_more_than_five_stacked_content_codings_are_refused(
    gateway: tuple[FastAPI, AsyncClient], upstream: Upstream
) -> None:
    _, client = gateway
    user, app_id = await fetcher(client)
    for layers in (5, 6):
        body = b"packed"
        for _ in range(layers):
            body = gzip.compress(body)
        encoding = ", ".join(["gzip"] * layers)
        upstream.answers[f"/{layers}"] = answer(
            body, "text/plain", extra=f"Content-Encoding: {encoding}\r\n"
        )
    data = data_of(await fetch(client, user, app_id, url=upstream.url("/5")))
    assert data["get"]["body"] == "packed"
    response = await fetch(client, user, app_id, url=upstream.url("/6"))
    assert_error(response, 502, "upstream_error")
    assert response.json()["message"] == "the answer stacks more than 5 content codings"


async def test_header_values_are_trimmed_and_control_characters_refused(
    gateway: tuple[FastAPI, AsyncClient], upstream: Upstream
) -> None:
    _, client = gateway
    user, app_id = await fetcher(client, headers={"X-Token": {"expr": "args.v"}})
    data = data_of(await fetch(client, user, app_id, url=upstream.url("/echo"), v=" tok\t1 "))
    assert data["get"]["body"]["x-token"] == "tok\t1"
    upstream.seen.clear()
    for value in ("a\x0bb", "a\x1bb", "a\x7fb"):
        response = await fetch(client, user, app_id, url=upstream.url("/echo"), v=value)
        data = assert_error(response, 400, "step_failed")
        assert data["field"] == "headers"
        assert response.json()["message"] == "header 'X-Token' contains a control character"
    assert upstream.seen == []


async def test_a_query_on_a_malformed_url_is_an_invalid_url(
    gateway: tuple[FastAPI, AsyncClient],
) -> None:
    _, client = gateway
    user, app_id = await fetcher(client, query={"q": "1"})
    for url in ("http://[::1", "http://[::1/x"):
        response = await fetch(client, user, app_id, url=url)
        data = assert_error(response, 400, "invalid_url")
        assert data["stepId"] == "get"


async def test_an_internationalised_host_is_asked_for_as_browsers_spell_it(
    gateway: tuple[FastAPI, AsyncClient], upstream: Upstream
) -> None:
    app, client = gateway
    resolved = resolve_test_names_locally(app)
    user, app_id = await fetcher(client)
    # IDNA 2003 (Python's codec) spelt faß as fass: another domain, with another owner.
    data = data_of(await fetch(client, user, app_id, url=upstream.url("/echo", "faß.test")))
    assert resolved == ["xn--fa-hia.test"]
    assert data["get"]["body"]["host"] == f"xn--fa-hia.test:{upstream.port}"
