"""Pure ASGI middleware for the conventions every request shares (no BaseHTTPMiddleware)."""

import asyncio
import codecs
import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

import structlog
from starlette.datastructures import MutableHeaders
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apiforge.core.db import database_refusal
from apiforge.core.errors import PayloadTooLargeError, UnavailableError
from apiforge.http.envelope import error_response
from apiforge.http.metrics import observe_request
from apiforge.http.schemas import REQUEST_ID
from apiforge.tools.ids import new_id

OVERRIDABLE = frozenset({"PUT", "PATCH", "DELETE"})
OVERRIDE_FIELD = "X-HTTP-Method-Override"
_OVERRIDE_HEADER = b"x-http-method-override"
# Every answer carries a tenant's data, a secret or an error about them: no shared (or browser)
# cache may store it, and no browser may sniff a JSON body echoing input as HTML. An answer that
# sets its own `Cache-Control` (a file download) keeps it. Pairs of raw ASGI header lines.
ANSWER_HEADERS = ((b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"))
# Headers a request may carry once, as they are spelt in errors: who is calling (a key, a token,
# a signature), on whose behalf (an end user, a workspace) and which retry it is. None is a list
# (RFC 9110 §5.3), and with two lines one reader takes the first and another the last — a proxy
# and the app, or the gateway and the management API — so they could disagree about who called.
SINGLE_HEADERS = {
    name.lower().encode("latin-1"): name
    for name in (
        "Authorization",
        "X-Api-Key",
        "X-End-User-Token",
        "X-App-Id",
        "X-Timestamp",
        "X-Nonce",
        "X-Sign",
        "X-Workspace-Id",
        "Idempotency-Key",
        "X-Idempotency-Token",
        "X-Request-Seq",
    )
}
# What routing adds to a scope, read by the access log and the metrics (`_route_template`).
_ROUTED = ("route", "endpoint")
log = structlog.get_logger("apiforge.access")
# The status of a request cancelled before it answered: nginx's "client closed request", as
# the gateway's (gateway/context.py `CANCELLED`).
CLIENT_CLOSED_REQUEST = 499


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def request_id_of(scope: Scope) -> str:
    """The request's id: the one `RequestIdMiddleware` settled (a route asking again must get the
    id echoed and logged, not a second new one), else a well-formed `X-Request-ID` from the
    client, else a new id."""
    settled = scope.get("state", {}).get("request_id")
    if isinstance(settled, str):
        return settled
    given = _header(scope, b"x-request-id")
    text = given.decode("latin-1") if given else ""
    return text if REQUEST_ID.fullmatch(text) else new_id()  # `$` would let a final "\n" by


async def _call_as(app: ASGIApp, scope: Scope, method: str, receive: Receive, send: Send) -> None:
    """Run `app` on a copy of `scope` with another method, the outer middleware keeping the
    client's own (the access log records the `HEAD`), then copy back what routing named in the
    copy: the access log and `/metrics` count the request under its route, not "unmatched"."""
    inner = dict(scope, method=method)
    try:
        await app(inner, receive, send)
    finally:
        scope.update((key, inner[key]) for key in _ROUTED if key in inner)


def add_answer_headers(message: Message) -> None:
    """Append `ANSWER_HEADERS` to a `http.response.start` message, but none it already has."""
    headers = message.setdefault("headers", [])
    names = {name.lower() for name, _ in headers}
    headers.extend(line for line in ANSWER_HEADERS if line[0] not in names)


class RequestIdMiddleware:
    """Accept a well-formed `X-Request-ID`, else mint one; echo it and bind it to logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
                add_answer_headers(message)
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self.app(scope, receive, send_with_id)


def overridden_method(method: str, override: str) -> str | None:
    """The method a request runs as: `POST` with `X-HTTP-Method-Override: PUT|PATCH|DELETE` runs
    as that method (DESIGN.md §2: for clients that can only send POST); a header naming the
    request's own method changes nothing. None for any other ask (`GET`, `TRACE`, `foo`, or an
    override on another method): running the request as its own method would do what the client
    did not ask for, so it is refused (400 `invalid_method_override`) and nothing runs."""
    wanted = override.upper()
    if wanted == method:
        return method
    if method == "POST" and wanted in OVERRIDABLE:
        return wanted
    return None


def requested_method(scope: Scope) -> str | None:
    """The method the request in `scope` runs as, from every `X-HTTP-Method-Override` line
    (`overridden_method`); None when it is refused. Several lines must name one method (in any
    case): lines that disagree ask for no method in particular, and an edge reading the first
    and another the last would run one request as two different methods. Empty lines ask for
    nothing. Both edges call this, so they read a request alike."""
    method: str = scope["method"]
    wanted: str | None = None
    for name, value in scope["headers"]:
        if name == _OVERRIDE_HEADER and value:
            line = value.decode("latin-1").upper()
            if wanted is not None and line != wanted:
                return None
            wanted = line
    return method if wanted is None else overridden_method(method, wanted)


def method_override_refused() -> Response:
    """The 400 answer to an `X-HTTP-Method-Override` the request can't be run as."""
    return error_response(
        400,
        "invalid_method_override",
        f"{OVERRIDE_FIELD} is accepted only on POST, naming PUT, PATCH or DELETE",
        {"errors": [{"field": OVERRIDE_FIELD, "message": "must be PUT, PATCH or DELETE, on POST"}]},
    )


def repeated_header(lines: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The first of `SINGLE_HEADERS` sent on more than one line (as spelt there), else None."""
    seen: set[bytes] = set()
    for name, _ in lines:
        if name in SINGLE_HEADERS:
            if name in seen:
                return SINGLE_HEADERS[name]
            seen.add(name)
    return None


def repeated_header_refused(field: str) -> Response:
    """The 400 answer to a request sending `field` twice: refused whatever the lines say (equal
    lines too, which an intermediary may join into one `a, a`)."""
    return error_response(
        400,
        "duplicate_header",
        f"{field} must be sent once",
        {"errors": [{"field": field, "message": "must be sent on one line only"}]},
    )


class SingleHeaderMiddleware:
    """A request sending one of `SINGLE_HEADERS` on several lines is a 400 before anything runs,
    as on the gateway (`gateway/endpoint.py`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            repeated = repeated_header(scope["headers"])
            if repeated is not None:
                await repeated_header_refused(repeated)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class MethodOverrideMiddleware:
    """`POST` + `X-HTTP-Method-Override: PUT|PATCH|DELETE` is handled as that method; any other
    override (or lines naming different methods) is a 400 before routing (`requested_method`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method = requested_method(scope)
            if method is None:
                await method_override_refused()(scope, receive, send)
                return
            if method != scope["method"]:
                await _call_as(self.app, scope, method, receive, send)
                return
        await self.app(scope, receive, send)


class _HeadAnsweredError(Exception):
    """Raised into the app once a HEAD answer's headers are out: its body is never wanted."""


class HeadMiddleware:
    """`HEAD` on any `GET` route: the route runs as a `GET` (RFC 9110 §9.3.2: the same header
    fields), its headers are sent, its body is not. A streamed body (a file download) is cut off at
    its first chunk instead of being read to the end. Routes stay `GET`-only in the router and
    the OpenAPI document; the access log records the `HEAD`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return
        finished = False

        async def send_headers_only(message: Message) -> None:
            nonlocal finished
            if message["type"] != "http.response.body":
                await send(message)
                return
            if finished:
                return
            finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if message.get("more_body", False):
                raise _HeadAnsweredError()

        with contextlib.suppress(_HeadAnsweredError):
            await _call_as(self.app, scope, "GET", receive, send_headers_only)


class BodyLimitMiddleware:
    """Refuse bodies over the limit: early by `Content-Length`, else while streaming. `per_path`
    gives some paths a limit of their own (file uploads, which stream to disk)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.per_path.get(scope["path"], self.max_bytes)
        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > max_bytes):
            err = PayloadTooLargeError(details={"maxBytes": max_bytes})
            await error_response(err.status, err.reason, err.message, err.details)(
                scope, receive, send
            )
            return
        seen = 0
        refused = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes and not refused:
                    # Answer 413 ourselves: frameworks turn errors raised while reading the
                    # body into their own 400, which `guarded_send` then discards.
                    refused = True
                    err = PayloadTooLargeError(details={"maxBytes": max_bytes})
                    response = error_response(err.status, err.reason, err.message, err.details)
                    await response(scope, receive, send)
                    raise err
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counting_receive, guarded_send)


def _json_media(scope: Scope) -> bool:
    """Whether FastAPI reads the body as JSON: `application/json` or `application/*+json`."""
    value = _header(scope, b"content-type")
    if value is None:
        return False
    media = value.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


class Utf8JsonMiddleware:
    """Refuse a JSON body that is not UTF-8 (RFC 8259 §8.1), as the gateway's parser does.
    FastAPI hands the bytes to `json.loads`, which guesses UTF-16 and UTF-32 and lets encoded
    surrogates through; this checks the bytes as they stream in (one UTF-8 mark at the start
    stays allowed, it is UTF-8). A failure raises `UnicodeDecodeError` from `receive`, which
    FastAPI turns into the 400 `malformed_json` of any body it cannot parse (`handlers.py`).
    `documents` are paths that read their body themselves in the encoding a mark names (app
    import files)."""

    def __init__(self, app: ASGIApp, documents: Iterable[str] = ()) -> None:
        self.app = app
        self.documents = frozenset(documents)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.documents or not _json_media(scope):
            await self.app(scope, receive, send)
            return
        decoder = codecs.getincrementaldecoder("utf-8")()

        async def checked_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                # A character split between chunks waits for its rest; `final` checks the end.
                decoder.decode(message.get("body", b""), final=not message.get("more_body"))
            return message

        await self.app(scope, checked_receive, send)


class AccessLogMiddleware:
    """One JSON log line and the Prometheus observations per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        answered = False

        async def send_and_capture(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                answered = True
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_capture)
        except asyncio.CancelledError:
            # Its client gone (or the server stopping) before an answer: not a 500.
            if not answered:
                status = CLIENT_CLOSED_REQUEST
            raise
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            observe_request(scope["method"], route, status, elapsed)
            log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                route=route,
                status=status,
                ms=round(elapsed * 1000, 2),
            )


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    # Plain Starlette routes (the gateway) leave their endpoint, which names its path.
    endpoint: Any = scope.get("endpoint")
    path = getattr(route, "path", None) or getattr(endpoint, "route_path", None)
    return str(path or "unmatched")


def database_refused(exc: Exception, path: str | None) -> UnavailableError | None:
    """The 503 for a lost database connection, or none free in the pool (`database_refusal`),
    logged as a warning without the traceback: the client's to retry, on either edge. None for
    any other error."""
    refused = database_refusal(exc)
    if refused is not None:
        log.warning("database_refused", reason=refused.reason, path=path, error=repr(exc)[:300])
    return refused


def unhandled_response(exc: Exception, path: str | None) -> Response:
    """The answer to an exception no handler took, logged: a `database_refused` 503, anything
    else an opaque 500."""
    refused = database_refused(exc, path)
    if refused is not None:
        return error_response(
            refused.status, refused.reason, refused.message, headers=refused.headers
        )
    log.exception("unhandled_error", path=path)
    return error_response(500, "internal_error", "Internal server error")


class ErrorMiddleware:
    """Last line of defence: any unhandled exception becomes a logged, opaque 500 envelope (a
    503 when the database connection was lost: `unhandled_response`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            response = unhandled_response(exc, scope.get("path"))
            if not started:
                await response(scope, receive, send)
