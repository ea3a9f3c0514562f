"""The ASGI endpoint of `POST /api/v1/invocations`: runs the stages, renders the envelope.

Pure ASGI on the hot path: no FastAPI dependency solving, one database connection per call
(the stages share it; the run commits it), errors rendered by the one envelope renderer.
"""

from collections.abc import Sequence

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from apiforge.core.errors import ApiforgeError
from apiforge.gateway.context import GatewayContext
from apiforge.gateway.stage import AfterStage, Answered, GatewayState, Stage
from apiforge.http.envelope import error_response
from apiforge.tools.netpolicy import proxy_policy


class GatewayEndpoint:
    route_path = "/api/v1/invocations"  # the label of its requests in logs and metrics

    def __init__(
        self, state: GatewayState, stages: Sequence[Stage], after: Sequence[AfterStage]
    ) -> None:
        self.state = state
        self.stages = tuple(stages)
        self.after = tuple(after)
        self.proxies = proxy_policy(tuple(state.settings.trusted_proxies))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS":
            await _preflight(scope)(scope, receive, send)
            return
        if scope["method"] != "POST":
            response = error_response(405, "method_not_allowed", "Method not allowed")
            await response(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        peer = scope["client"][0] if scope.get("client") else ""
        ctx = GatewayContext(
            headers=headers,
            # X-Forwarded-For counts only from a trusted proxy (tools/netpolicy.py).
            client_ip=self.proxies.client_ip(peer, headers.get("x-forwarded-for")),
            request_id=scope.get("state", {}).get("request_id", ""),
            raw_body=await _read_body(receive),
            method=scope["method"],
            path=scope["path"],
            query_string=scope.get("query_string", b"").decode("latin-1"),
        )
        response = await self._handle(ctx)
        await response(scope, receive, send)

    async def _handle(self, ctx: GatewayContext) -> Response:
        try:
            async with self.state.db.connect() as connection:
                ctx.connection = connection
                for stage in self.stages:
                    ctx.stages_run.append(stage.name)
                    await stage.on_request(ctx)
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
            ctx.status, ctx.reason = exc.status, exc.reason
            headers = {**ctx.response_headers, **exc.headers}
            response = error_response(exc.status, exc.reason, exc.message, exc.details, headers)
        except Exception:
            ctx.status, ctx.reason = 500, "internal_error"
            raise
        finally:
            ctx.connection = None
            for after in self.after:
                await after.after(ctx)
        return response


_PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "POST",
    "Access-Control-Allow-Headers": (
        "Authorization, Content-Type, Idempotency-Key, X-Api-Key, X-End-User-Token, X-Request-ID"
    ),
    "Access-Control-Max-Age": "600",
    "Vary": "Origin",
}


def _preflight(scope: Scope) -> Response:
    """CORS preflight for browsers using publishable keys. A preflight carries no key, so it can
    only say which headers a real call may send; the real call is then checked against the
    key's allowed origins (and gets `Access-Control-Allow-Origin` only when it passes)."""
    origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), "")
    headers = dict(_PREFLIGHT_HEADERS)
    if origin:
        headers["Access-Control-Allow-Origin"] = origin
    return Response(status_code=204, headers=headers)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
