"""After-stage: the request log of every call, buffered (no database round trip per call).

The row is built from what the stages learnt before the call ended, so a refusal records as much
as was known: no workspace before the caller was identified, no app owner before the app was
resolved, and no args (nor the resolved version) before the caller passed the policy stage and
the API's params (which say what is `sensitive`) were known.
"""

import time
from datetime import timedelta

import structlog

from apiforge.gateway.context import GatewayContext
from apiforge.gateway.stage import GatewayState
from apiforge.tools.clock import utcnow
from apiforge.usage.buffer import RequestLogBuffer
from apiforge.usage.masking import mask_args

log = structlog.get_logger(__name__)

BUFFER_KEY = "request_logs"


def request_log_buffer(state: GatewayState) -> RequestLogBuffer:
    """The process's request-log buffer (tests `await` its `flush()`)."""
    buffer: RequestLogBuffer = state.extra[BUFFER_KEY]
    return buffer


async def drain_request_logs(state: GatewayState) -> None:
    """Write the buffered rows and stop the writer: call on shutdown, before the engine closes."""
    buffer = state.extra.get(BUFFER_KEY)
    if isinstance(buffer, RequestLogBuffer):
        await buffer.close()


class RequestLogStage:
    name = "log"

    def __init__(self, state: GatewayState) -> None:
        self.buffer = RequestLogBuffer(state.db)
        state.extra[BUFFER_KEY] = self.buffer

    async def after(self, ctx: GatewayContext) -> None:
        if ctx.log_written:  # a charged call's row committed with its charge (stages/charge.py)
            return
        try:
            self.buffer.append(self._row(ctx))
        except Exception:  # an after-stage must not raise: a lost line beats a failed call
            log.exception("request_log_row_failed", request_id=ctx.request_id)

    @staticmethod
    def row(ctx: GatewayContext) -> dict[str, object]:
        """The call's row as things stand (the charge stage writes it with the charge)."""
        return RequestLogStage._row(ctx)

    @staticmethod
    def _row(ctx: GatewayContext) -> dict[str, object]:
        elapsed = time.perf_counter() - ctx.started
        caller, target, compiled = ctx.caller, ctx.target, ctx.compiled
        return {
            "created_at": utcnow() - timedelta(seconds=elapsed),
            "request_id": ctx.request_id[:128],
            "workspace_id": caller.workspace_id if caller else None,
            "app_workspace_id": target.workspace_id if target else None,
            "account_id": caller.account_id if caller else None,
            "key_id": caller.key_id if caller else None,
            "caller_kind": caller.kind if caller else None,
            "app_id": ctx.app_id,
            "api": ctx.api,
            "version": _version(ctx)[:32],
            "status": ctx.status,
            "reason": ctx.reason[:64],
            "latency_ms": round(elapsed * 1000, 3),
            "client_ip": ctx.client_ip[:45],
            "args": mask_args(ctx.args, compiled.params.sensitive) if compiled else None,
            # Nothing debited: a charged call's row is written by its charge, which sets the
            # debit (billing/charging.py); a row written here is of a call that moved nothing.
            "amount": 0,
        }


def _version(ctx: GatewayContext) -> str:
    """The version that ran (`1.4.0` for `latest`) once the caller passed the policy stage (the
    API's plan is loaded); before that, the label the caller sent, so a caller refused on an app
    it may not see never learns its versions from its own log."""
    if ctx.compiled is not None and ctx.target is not None and ctx.target.version:
        return ctx.target.version
    return ctx.version
