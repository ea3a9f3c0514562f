"""`httpRequest`: requests, secrets from env, SSRF refusals (also after redirects), timeouts, caps.

Every request goes to a server on 127.0.0.1 started by the test and allow-listed; refused
targets are refused before any connection, so nothing leaves the machine.
"""

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from apiforge.engine.base import LimitExceededError, RunContext, StepFailedError
from apiforge.engine.compiler import compile_api
from apiforge.engine.errors import DefinitionError
from apiforge.engine.runtime import Masker, run_api, trace_json

from ._local_http import LocalServer, tls_pair
from ._steps_support import compile_step, make_context, make_services

LOCAL = frozenset({"127.0.0.1"})


@pytest.fixture
async def server() -> AsyncIterator[LocalServer]:
    local = LocalServer()
    await local.start()
    yield local
    await local.stop()


def _ctx(allow: frozenset[str] = LOCAL, **kwargs: Any) -> RunContext:
    return make_context(services=make_services(allow_hosts=allow), **kwargs)


async def _run(config: dict[str, Any], ctx: RunContext | None = None) -> Any:
    step = compile_step({"id": "call", "type": "httpRequest", **config})
    return await step.run(ctx or _ctx())


async def _fails(config: dict[str, Any], ctx: RunContext | None = None) -> StepFailedError:
    with pytest.raises(StepFailedError) as caught:
        await _run(config, ctx)
    assert caught.value.details["stepId"] == "call"
    return caught.value


# --- requests and answers ------------------------------------------------------------------


async def test_get_returns_status_headers_and_parsed_json(server: LocalServer) -> None:
    out = await _run({"url": f"{server.base}/echo?a=1", "query": {"b": 2, "c": [True, None]}})
    assert out["status"] == 200
    assert out["headers"]["content-type"] == "application/json"
    assert out["body"]["method"] == "GET"
    assert out["body"]["query"] == {"a": ["1"], "b": ["2"], "c": ["true"]}
    assert out["body"]["headers"]["host"] == f"127.0.0.1:{server.port}"
    assert out["body"]["headers"]["user-agent"].startswith("apiforge")


async def test_post_sends_json_body_and_secret_header_from_env(server: LocalServer) -> None:
    ctx = _ctx(args={"title": "hi"}, env={"config": {}, "secrets": {"apiKey": "s3cret"}})
    out = await _run(
        {
            "method": "POST",
            "url": {"expr": f"'{server.base}' + '/echo'"},
            "headers": {"Authorization": {"expr": "'Bearer ' + env.secrets.apiKey"}},
            "body": {"title": {"expr": "args.title"}, "n": 1},
        },
        ctx,
    )
    seen = server.seen[-1]
    assert seen.method == "POST"
    assert seen.headers["authorization"] == "Bearer s3cret"
    assert seen.headers["content-type"] == "application/json"
    assert out["body"]["body"] == '{"title": "hi", "n": 1}'


async def test_secrets_in_request_headers_are_masked_in_a_debug_trace(
    server: LocalServer,
) -> None:
    compiled = compile_api(
        {
            "api": "proxy",
            "steps": [
                {
                    "id": "call",
                    "type": "httpRequest",
                    "url": f"{server.base}/echo",
                    "headers": {"Authorization": {"expr": "'Bearer ' + env.secrets.apiKey"}},
                }
            ],
            "returnSteps": [],
        },
        {},
        {},
    )
    ctx = _ctx(env={"config": {}, "secrets": {"apiKey": "sk-live-abcdef"}})
    ctx.trace = []
    _, trace = await run_api(compiled, ctx)
    assert trace is not None
    rows = trace_json(trace, Masker(compiled.masked_keys, ctx.masked_values))
    assert rows[0]["input"]["headers"] == {"Authorization": "Bearer ***"}
    assert rows[0]["input"]["url"] == f"{server.base}/echo"
    assert "sk-live-abcdef" not in json.dumps(rows)
    assert server.seen[0].headers["authorization"] == "Bearer sk-live-abcdef"


async def test_text_answer_is_a_string_and_non_2xx_is_an_output(server: LocalServer) -> None:
    assert (await _run({"url": f"{server.base}/text"}))["body"] == "hello there"
    out = await _run({"url": f"{server.base}/status/418"})
    assert out["status"] == 418
    assert out["body"] == {"status": 418}


async def test_invalid_json_is_text_in_auto_mode_and_a_failure_in_json_mode(
    server: LocalServer,
) -> None:
    assert (await _run({"url": f"{server.base}/badjson"}))["body"] == "{not json"
    failure = await _fails({"url": f"{server.base}/badjson", "responseType": "json"})
    assert failure.reason == "upstream_invalid_json"


async def test_proxy_settings_of_the_environment_are_ignored(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    assert (await _run({"url": f"{server.base}/text"}))["status"] == 200


async def test_connection_refused_is_an_upstream_error() -> None:
    failure = await _fails({"url": "http://127.0.0.1:9/"})
    assert failure.reason == "upstream_error"
    assert failure.status == 502


async def test_header_values_with_line_breaks_are_refused(server: LocalServer) -> None:
    failure = await _fails(
        {"url": f"{server.base}/echo", "headers": {"X-A": {"expr": "'a\\r\\nX-Injected: 1'"}}}
    )
    assert "line break" in failure.message
    for value in ("caf\u00e9", "x" * 9000):
        failure = await _fails(
            {"url": f"{server.base}/echo", "headers": {"X-A": {"expr": "args.v"}}},
            _ctx(args={"v": value}),
        )
        assert failure.details["field"] == "headers"
    assert server.seen == []


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ("x", "headers must be an object"),
        ([1], "headers must be an object"),
        ({"Host": "evil"}, "header 'Host' is set by the platform"),
        ({"transfer-encoding": "chunked"}, "header 'transfer-encoding' is set by the platform"),
        ({"Content-Length": "1"}, "header 'Content-Length' is set by the platform"),
        ({"Connection": "close"}, "header 'Connection' is set by the platform"),
        ({"bad name\r\n": "v"}, "invalid header name 'bad name\\r\\n'"),
        ({"": "v"}, "invalid header name ''"),
    ],
)
async def test_headers_computed_at_call_time_get_the_checks_of_literal_ones(
    server: LocalServer, headers: Any, message: str
) -> None:
    # A whole-object expression passes the save-time name checks: a non-object was a 500 and
    # a forbidden name went out.
    failure = await _fails(
        {"url": f"{server.base}/echo", "headers": {"expr": "args.h"}}, _ctx(args={"h": headers})
    )
    assert (failure.status, failure.message, failure.details["field"]) == (400, message, "headers")
    assert server.seen == []


async def test_headers_from_one_expression_are_sent(server: LocalServer) -> None:
    out = await _run(
        {"url": f"{server.base}/echo", "headers": {"expr": "args.h"}},
        _ctx(args={"h": {"X-A": "1", "X-Skip": None}}),
    )
    assert out["body"]["headers"]["x-a"] == "1"
    assert "x-skip" not in out["body"]["headers"]


# --- SSRF ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "[::1]",
        "0.0.0.0",  # noqa: S104 - a target the guard refuses, not a bind address
        "169.254.169.254",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "2130706433",
        "0x7f.1",
        "0177.0.0.1",
        "[::ffff:127.0.0.1]",
    ],
)
async def test_private_targets_are_refused_before_any_connection(
    server: LocalServer, host: str
) -> None:
    failure = await _fails({"url": f"http://{host}:{server.port}/echo"}, _ctx(allow=frozenset()))
    assert failure.reason == "ssrf_blocked"
    assert failure.status == 400
    assert server.seen == []


@pytest.mark.parametrize(
    "to",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.0.1:8080/",
        "http://127.0.0.2:{port}/echo",
        "http://0x7f.2:{port}/echo",
        "http://[::ffff:127.0.0.2]:{port}/echo",
    ],
)
async def test_redirect_from_an_allowed_server_to_a_private_host_is_refused(
    server: LocalServer, to: str
) -> None:
    location = to.format(port=server.port)
    failure = await _fails(
        {"url": f"{server.base}/redirect", "query": {"to": location, "code": 307}}
    )
    assert failure.reason == "ssrf_blocked"
    assert [seen.path for seen in server.seen] == ["/redirect"]


async def test_redirects_within_allowed_hosts_are_followed(server: LocalServer) -> None:
    out = await _run(
        {
            "method": "POST",
            "url": f"{server.base}/redirect",
            "query": {"to": "/echo?x=1", "code": 303},
            "headers": {"Authorization": "Bearer same-origin"},
            "body": {"a": 1},
        }
    )
    # 303: the next hop is a GET without the body; same origin keeps the credentials.
    assert out["body"]["method"] == "GET"
    assert out["body"]["body"] == ""
    assert out["body"]["headers"]["authorization"] == "Bearer same-origin"
    assert [seen.path for seen in server.seen] == ["/redirect", "/echo"]


async def test_307_keeps_method_and_body(server: LocalServer) -> None:
    out = await _run(
        {
            "method": "PUT",
            "url": f"{server.base}/redirect",
            "query": {"to": "/echo", "code": 307},
            "body": "raw text",
        }
    )
    assert out["body"]["method"] == "PUT"
    assert out["body"]["body"] == "raw text"


async def test_credentials_are_dropped_when_a_redirect_changes_origin(
    server: LocalServer,
) -> None:
    other = LocalServer()
    await other.start()
    try:
        out = await _run(
            {
                "url": f"{server.base}/redirect",
                "query": {"to": f"{other.base}/echo"},
                "headers": {"Authorization": "Bearer secret", "Cookie": "a=b", "X-Keep": "1"},
            }
        )
    finally:
        await other.stop()
    assert "authorization" not in out["body"]["headers"]
    assert "cookie" not in out["body"]["headers"]
    assert out["body"]["headers"]["x-keep"] == "1"


async def test_headers_carrying_a_secret_stay_behind_on_a_cross_origin_redirect(
    server: LocalServer,
) -> None:
    # An API key in a custom header is as much a credential as `Authorization`: the host the
    # redirect names never sees it; the same header goes on to a same-origin hop.
    other = LocalServer()
    await other.start()
    ctx = _ctx(env={"config": {}, "secrets": {"apiKey": "sk-live-abcdef"}})
    ctx.masked_values = ("sk-live-abcdef",)
    config = {
        "headers": {
            "X-Api-Key": {"expr": "env.secrets.apiKey"},
            "X-Signed": {"expr": "'v1=' + env.secrets.apiKey"},
            "X-Keep": "1",
        }
    }
    try:
        away = await _run(
            {"url": f"{server.base}/redirect", "query": {"to": f"{other.base}/echo"}, **config},
            ctx,
        )
        home = await _run(
            {"url": f"{server.base}/redirect", "query": {"to": "/echo"}, **config}, ctx
        )
    finally:
        await other.stop()
    assert "x-api-key" not in away["body"]["headers"]
    assert "x-signed" not in away["body"]["headers"]
    assert away["body"]["headers"]["x-keep"] == "1"
    assert "sk-live-abcdef" not in json.dumps(other.seen[0].headers)
    assert home["body"]["headers"]["x-api-key"] == "sk-live-abcdef"
    assert home["body"]["headers"]["x-signed"] == "v1=sk-live-abcdef"


async def test_a_307_that_would_resend_a_secret_body_to_another_origin_is_refused(
    server: LocalServer,
) -> None:
    other = LocalServer()
    await other.start()
    ctx = _ctx(env={"config": {}, "secrets": {"clientSecret": "cs-0123456789"}})
    ctx.masked_values = ("cs-0123456789",)
    body = {"client_id": "me", "client_secret": {"expr": "env.secrets.clientSecret"}}
    try:
        failure = await _fails(
            {
                "method": "POST",
                "url": f"{server.base}/redirect",
                "query": {"to": f"{other.base}/echo", "code": 307},
                "body": body,
            },
            ctx,
        )
        # The same body follows a 307 that stays on its origin, and a body without a secret
        # follows one that leaves it.
        home = await _run(
            {
                "method": "POST",
                "url": f"{server.base}/redirect",
                "query": {"to": "/echo", "code": 307},
                "body": body,
            },
            ctx,
        )
        plain = await _run(
            {
                "method": "POST",
                "url": f"{server.base}/redirect",
                "query": {"to": f"{other.base}/echo", "code": 307},
                "body": {"client_id": "me"},
            },
            ctx,
        )
    finally:
        await other.stop()
    assert failure.reason == "redirect_refused"
    assert "cs-0123456789" in home["body"]["body"]
    assert plain["body"]["body"] == '{"client_id": "me"}'
    assert len(other.seen) == 1  # only the secret-free body reached the other host


async def test_redirect_loop_stops(server: LocalServer) -> None:
    failure = await _fails({"url": f"{server.base}/loop"})
    assert failure.reason == "too_many_redirects"
    assert len(server.seen) == 6


async def test_redirects_can_be_returned_instead_of_followed(server: LocalServer) -> None:
    out = await _run(
        {
            "url": f"{server.base}/redirect",
            "query": {"to": "http://169.254.169.254/"},
            "followRedirects": False,
        }
    )
    assert out["status"] == 302
    assert out["headers"]["location"] == "http://169.254.169.254/"


@pytest.mark.parametrize(
    "url", ["ftp://example.com/", "file:///etc/passwd", "http://user:pw@127.0.0.1/", 42]
)
async def test_unsupported_urls_from_expressions_fail_at_call_time(url: Any) -> None:
    ctx = _ctx(args={"url": url})
    failure = await _fails({"url": {"expr": "args.url"}}, ctx)
    assert failure.reason == "invalid_url"
    assert failure.status == 400


def _resolver(table: dict[str, list[str]], calls: list[str] | None = None) -> Any:
    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(host)
        return table[host]

    return resolve


async def test_name_resolving_to_a_private_address_is_refused(server: LocalServer) -> None:
    resolver = _resolver({"internal.test": ["10.0.0.5"], "split.test": ["8.8.8.8", "127.0.0.1"]})
    ctx = make_context(services=make_services(extra={"http_resolver": resolver}))
    for host in ("internal.test", "split.test"):
        failure = await _fails({"url": f"http://{host}:{server.port}/echo"}, ctx)
        assert failure.reason == "ssrf_blocked"
    assert server.seen == []


async def test_connection_goes_to_the_checked_address_without_resolving_again(
    server: LocalServer,
) -> None:
    calls: list[str] = []
    resolver = _resolver({"pinned.test": ["127.0.0.1"]}, calls)
    ctx = make_context(services=make_services(allow_hosts=LOCAL, extra={"http_resolver": resolver}))
    out = await _run({"url": f"http://pinned.test:{server.port}/echo"}, ctx)
    assert out["body"]["headers"]["host"] == f"pinned.test:{server.port}"
    assert calls == ["pinned.test"]  # one resolution, the one that was checked


async def _tls_server(tmp_path: Path, names: list[str]) -> tuple[LocalServer, Any]:
    server_tls, client_tls = tls_pair(tmp_path, names)
    local = LocalServer()
    await local.start(server_tls)
    return local, client_tls


async def test_https_keeps_server_name_and_certificate_check_while_pinned(
    tmp_path: Path,
) -> None:
    local, client_tls = await _tls_server(tmp_path, ["api.test"])
    resolver = _resolver({"api.test": ["127.0.0.1"]})
    extra = {"http_resolver": resolver, "http_ssl_context": client_tls}
    ctx = make_context(services=make_services(allow_hosts=LOCAL, extra=extra))
    try:
        out = await _run({"url": f"https://api.test:{local.port}/echo"}, ctx)
        assert out["status"] == 200
        assert out["body"]["headers"]["host"] == f"api.test:{local.port}"
        # The certificate is for api.test, not for the address connected to.
        failure = await _fails({"url": f"https://127.0.0.1:{local.port}/echo"}, ctx)
        assert failure.reason == "upstream_error"
    finally:
        await local.stop()


async def test_https_refuses_untrusted_and_misnamed_certificates(tmp_path: Path) -> None:
    local, client_tls = await _tls_server(tmp_path, ["other.test"])
    resolver = _resolver({"api.test": ["127.0.0.1"]})
    try:
        for extra in (
            {"http_resolver": resolver},
            {"http_resolver": resolver, "http_ssl_context": client_tls},
        ):
            ctx = make_context(services=make_services(allow_hosts=LOCAL, extra=extra))
            failure = await _fails({"url": f"https://api.test:{local.port}/echo"}, ctx)
            assert failure.reason == "upstream_error"
            assert failure.status == 502
        assert local.seen == []
    finally:
        await local.stop()


# --- time and size ------------------------------------------------------------------------


async def test_slow_server_times_out(server: LocalServer) -> None:
    started = time.monotonic()
    failure = await _fails({"url": f"{server.base}/slow", "timeout": 0.5})
    assert failure.reason == "upstream_timeout"
    assert failure.status == 504
    assert time.monotonic() - started < 2


async def test_dripping_body_is_bounded_by_the_total_timeout(server: LocalServer) -> None:
    # Each byte arrives well within any per-read timeout; the whole answer would take 20 s.
    started = time.monotonic()
    failure = await _fails({"url": f"{server.base}/drip", "timeout": 1})
    assert failure.reason == "upstream_timeout"
    assert time.monotonic() - started < 3


async def test_call_deadline_caps_the_request_timeout(server: LocalServer) -> None:
    ctx = _ctx(deadline=time.monotonic() + 0.5)
    started = time.monotonic()
    with pytest.raises(LimitExceededError) as caught:
        await _run({"url": f"{server.base}/slow", "timeout": 10}, ctx)
    assert caught.value.reason == "limit_exceeded"
    assert caught.value.status == 422
    assert caught.value.details == {"limit": "time", "max": 10.0, "stepId": "call"}
    assert time.monotonic() - started < 2


async def test_spent_deadline_fails_without_a_request(server: LocalServer) -> None:
    with pytest.raises(LimitExceededError):
        await _run({"url": f"{server.base}/echo"}, _ctx(deadline=time.monotonic() - 1))
    assert server.seen == []


@pytest.mark.parametrize("path", ["/huge", "/huge-unsized"])
async def test_huge_answers_are_cut_off(server: LocalServer, path: str) -> None:
    started = time.monotonic()
    failure = await _fails({"url": f"{server.base}{path}"})
    assert failure.reason == "upstream_response_too_large"
    assert time.monotonic() - started < 3


async def test_size_cap_is_configurable_downwards(server: LocalServer) -> None:
    ok = await _run({"url": f"{server.base}/huge", "query": {"size": 100}, "maxResponseBytes": 100})
    assert ok["body"] == "y" * 100
    failure = await _fails(
        {"url": f"{server.base}/huge-unsized", "query": {"size": 101}, "maxResponseBytes": 100}
    )
    assert failure.reason == "upstream_response_too_large"


# --- definitions refused on save ------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"url": "http://x.example/", "timeout": 11}, "timeout"),
        ({"url": "http://x.example/", "timeout": 0}, "timeout"),
        ({"url": "http://x.example/", "maxResponseBytes": 2 * 1024 * 1024}, "maxResponseBytes"),
        ({"url": "http://x.example/", "method": "TRACE"}, "method"),
        ({"url": "http://x.example/", "headers": {"Host": "evil"}}, "headers"),
        ({"url": "http://x.example/", "headers": {"Bad Name": "x"}}, "headers"),
        ({"url": "http://x.example/", "body": {"a": 1}}, "body"),
        ({"url": 42}, "url"),
        ({"url": "http://x.example/", "query": [1]}, "query"),
        ({"url": "http://x.example/", "surprise": 1}, "surprise"),
        ({}, "url"),
        ({"url": {"expr": "args."}}, "url"),
    ],
)
def test_bad_definitions_are_refused_naming_the_field(config: dict[str, Any], field: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        compile_step({"id": "call", "type": "httpRequest", **config})
    assert caught.value.field.startswith(f"steps.call.{field}")


def test_cost_is_the_step_type_price() -> None:
    step = compile_step({"id": "call", "type": "httpRequest", "url": "http://x.example/"})
    assert step.cost({"httpRequest": 7}) == 7
