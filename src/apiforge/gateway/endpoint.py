"""The ASGI endpoint of `POST /api/v1/invocations`: runs the stages, renders the envelope.

Pure ASGI on the hot path: the application hands gateway calls straight here, in front of the
management API's middleware stack (`http/app.py`), so this endpoint keeps the conventions that
stack gives every other request itself — the request id, the body limit, the method override's
refusal, an opaque 500 for anything unexpected, the request metrics — at a fraction of the cost.
No FastAPI dependency solving; one database connection per call (the stages share it; the run
commits it); errors rendered by the one envelope renderer.

Every call is recorded in the request log (`gateway/stages/log.py`). The JSON access line on
stderr is written for 5xx answers, and for every call when `APIFORGE_GATEWAY_ACCESS_LOG` is on.
"""

import asyncio
import time
from collections.abc import Sequence

import structlog
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from apiforge.core.errors import ApiforgeError, PayloadTooLargeError
from apiforge.core.lazydb import LazyConnection
from apiforge.gateway.context import CANCELLED, GatewayContext
from apiforge.gateway.stage import AfterStage, Answered, GatewayState, Stage
from apiforge.http.envelope import error_response
from apiforge.http.metrics import observe_request
from apiforge.http.middleware import (
    ANSWER_HEADERS,
    database_refused,
    method_override_refused,
    repeated_header,
    repeated_header_refused,
    request_id_of,
    requested_method,
    unhandled_response,
)
from apiforge.tools.netpolicy import proxy_policy

log = structlog.get_logger("apiforge.access")
_ALLOW = "OPTIONS, POST"
_FORWARDED_FOR = b"x-forwarded-for"


class _BodyTooLargeError(Exception):
    pass


class _ClientGoneError(Exception):
    """The client disconnected before its body was whole."""


class GatewayEndpoint:
    route_path = "/api/v1/invocations"  # the label of its requests in logs and metrics

    def __init__(
        self, state: GatewayState, stages: Sequence[Stage], after: Sequence[AfterStage]
    ) -> None:
        self.state = state
        self.stages = tuple(stages)
        self.after = tuple(after)
        self.proxies = proxy_policy(tuple(state.settings.trusted_proxies))
        self.max_body = state.settings.max_body_bytes
        self.access_log = state.settings.gateway_access_log
        # The embedded database: a call's stages wait one turn of the loop (`_handle`).
        self.take_turn = state.reader is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request_id = request_id_of(scope)
        status = 500
        answered = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                answered = True
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((b"x-request-id", request_id.encode("latin-1")))
                headers.extend(ANSWER_HEADERS)  # no stage sets its own: `no-store`, `nosniff`
                message["headers"] = headers
            await send(message)

        try:
            response = await self._serve(scope, receive, request_id)
            if response is None:  # the client left before its body was whole: nothing ran
                status = CANCELLED
                return
            await response(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # The client went away (or the server is stopping) before an answer: not a 500.
            if not answered:
                status = CANCELLED
            raise
        except Exception as exc:
            with structlog.contextvars.bound_contextvars(request_id=request_id):
                response = unhandled_response(exc, scope["path"])
            if not answered:
                await response(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            observe_request(scope["method"], self.route_path, status, elapsed)
            if self.access_log or status >= 500:
                log.info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    route=self.route_path,
                    status=status,
                    ms=round(elapsed * 1000, 2),
                    request_id=request_id,
                )

    async def _serve(self, scope: Scope, receive: Receive, request_id: str) -> Response | None:
        method = scope["method"]
        headers = _header_map(scope)
        # A name sent on several lines collapses in the map: only then are the lines walked
        # again, for a credential or idempotency header sent twice (400, as on the management
        # API: `SingleHeaderMiddleware`).
        if len(headers) != len(scope["headers"]):
            repeated = repeated_header(scope["headers"])
            if repeated is not None:
                return repeated_header_refused(repeated)
        if method == "OPTIONS":
            return _preflight(scope)
        # `X-HTTP-Method-Override: PUT|PATCH|DELETE` turns the call into a method the gateway
        # does not serve, as it would on any other route; any other override is refused (400)
        # rather than run as the POST it was not asked to be. Every line is read, as the
        # management API reads them (`requested_method`): only a call that sends one pays.
        if "x-http-method-override" in headers:
            overridden = requested_method(scope)
            if overridden is None:
                return method_override_refused()
            method = overridden
        if method != "POST":
            # RFC 9110 §15.5.6: a 405 names the methods the path takes, as the router's do.
            return error_response(
                405, "method_not_allowed", "Method not allowed", headers={"Allow": _ALLOW}
            )
        declared = headers.get("content-length")
        # ASCII digits only, as `BodyLimitMiddleware` reads them: `"²".isdigit()` is true, but
        # `int("²")` raises (a 500 for a header byte 0xB2).
        if declared is not None and not (
            declared.isascii() and declared.isdigit() and int(declared) <= self.max_body
        ):
            return self._too_large()
        try:
            body = await _read_body(receive, self.max_body)
        except _BodyTooLargeError:
            return self._too_large()
        except _ClientGoneError:
            # A cut body may still parse (a whole JSON value, more to come): running it would
            # act on a request never sent in full, which the management API refuses too
            # (Starlette's `ClientDisconnect`).
            return None
        peer = scope["client"][0] if scope.get("client") else ""
        ctx = GatewayContext(
            headers=headers,
            # X-Forwarded-For counts only from a trusted proxy (tools/netpolicy.py).
            client_ip=self.proxies.client_ip(peer, headers.get("x-forwarded-for")),
            request_id=request_id,
            raw_body=body,
            method=method,
            path=scope["path"],
            query_string=scope.get("query_string", b"").decode("latin-1"),
        )
        return await self._handle(ctx)

    def _too_large(self) -> Response:
        err = PayloadTooLargeError(details={"maxBytes": self.max_body})
        return error_response(err.status, err.reason, err.message, err.details)

    async def _handle(self, ctx: GatewayContext) -> Response:
        """The stages, then the answer.

        On the embedded database the call first lets the loop take one turn, so the requests
        that have arrived meanwhile start before this one runs its stages. Measured under load
        (docs/benchmarks.md, 2026-12-07): 9-14 % less CPU per call, and as much more throughput,
        for one loop turn (microseconds) more per call. The loop's thread shares the GIL with
        the SQLite connections' threads, and the gain moves with how often it changes hands (a
        shorter switch interval made the call dearer): fewer hand-offs, not less work.
        PostgreSQL calls have no such threads and were not measured: they do not wait."""
        try:
            if self.take_turn:
                await asyncio.sleep(0)
            # Checked out on the call's first statement, if it makes one (core/lazydb.py).
            connection = LazyConnection(self.state.db, self.state.reader)
            ctx.connection = connection
            try:
                for stage in self.stages:
                    ctx.stages_run.append(stage.name)
                    await stage.on_request(ctx)
            finally:
                await connection.close()
            response = Response(
                ctx.body, media_type="application/json", headers=ctx.response_headers
            )
        except Answered:
            response = Response(
                ctx.body,
                status_code=ctx.status,
                media_type="application/json",
                headers=ctx.response_headers,
            )
        except ApiforgeError as exc:
            response = _refused(ctx, exc)
        except asyncio.CancelledError:
            ctx.status, ctx.reason = CANCELLED, "client_closed_request"
            raise
        except Exception as exc:
            # A lost database connection, or none free in the pool, is the client's to retry
            # (503), as on the management API (`unhandled_response`).
            refused = database_refused(exc, ctx.path)
            if refused is None:
                ctx.status, ctx.reason = 500, "internal_error"
                raise
            response = _refused(ctx, refused)
        finally:
            ctx.connection = None
            for after in self.after:
                await after.after(ctx)
        return response


# Details that name the platform's internal rows: a browser (`pk-`) caller is the app's end
# user, whom they would tell nothing but the shape of the builder's account.
_INTERNAL_DETAILS = ("walletId",)


def _refused(ctx: GatewayContext, exc: ApiforgeError) -> Response:
    ctx.status, ctx.reason = exc.status, exc.reason
    headers = {**ctx.response_headers, **exc.headers}
    details = exc.details
    caller = ctx.caller
    if caller is not None and caller.kind == "publishable_key":
        details = {k: v for k, v in details.items() if k not in _INTERNAL_DETAILS}
    return error_response(exc.status, exc.reason, exc.message, details, headers)


_PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "POST",
    "Access-Control-Allow-Headers": (
        "Authorization, Content-Type, Idempotency-Key, X-Api-Key, X-End-User-Token, X-Request-ID, "
        "X-Request-Seq, X-Idempotency-Token"
    ),
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}


def _header_map(scope: Scope) -> dict[str, str]:
    """Header names to values (the last line of a repeated name; the names that must come once,
    `http/middleware.py` `SINGLE_HEADERS`, are refused when repeated), except `X-Forwarded-For`:
    a proxy may add a line of its own rather than extend the client's, so every line counts, in
    order, as the management API reads it (`http/deps.py` `client_ip`)."""
    raw = scope["headers"]
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
    if "x-forwarded-for" in headers:
        lines = [v.decode("latin-1") for k, v in raw if k == _FORWARDED_FOR]
        headers["x-forwarded-for"] = ",".join(lines)
    return headers


def _preflight(scope: Scope) -> Response:
    """CORS preflight for browsers using publishable keys. A preflight carries no key, so it can
    only say which headers a real call may send; the real call is then checked against the
    key's allowed origins (and gets `Access-Control-Allow-Origin` only when it passes)."""
    origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), "")
    headers = dict(_PREFLIGHT_HEADERS)
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
    return Response(status_code=204, headers=headers)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks = []
    seen = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGoneError()
        chunk = message.get("body", b"")
        seen += len(chunk)
        if seen > limit:
            raise _BodyTooLargeError()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
