"""Stage: parse the invocation body `{appId, api, version, args, debug}` (DESIGN.md §4)."""

from pydantic import ValidationError as PydanticValidationError

from apiforge.core.errors import ValidationError
from apiforge.engine.schemas import InvocationCreate
from apiforge.gateway.context import GatewayContext
from apiforge.http.handlers import field_errors


class RequestStage:
    name = "request"

    async def on_request(self, ctx: GatewayContext) -> None:
        try:
            body = InvocationCreate.model_validate_json(ctx.raw_body or b"{}")
        except PydanticValidationError as exc:
            reason, message, errors = field_errors(exc.errors())
            raise ValidationError(message, errors=errors, reason=reason) from None
        ctx.app_id, ctx.api, ctx.version = body.app_id, body.api, body.version
        ctx.args, ctx.debug = body.args, body.debug
