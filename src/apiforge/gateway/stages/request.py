"""Stage: parse the invocation body `{appId, api, version, args, debug}` (DESIGN.md §4)."""

from pydantic import ValidationError as PydanticValidationError

from apiforge.core.errors import ValidationError
from apiforge.engine.schemas import InvocationCreate
from apiforge.gateway.context import GatewayContext
from apiforge.http.handlers import field_errors

# RFC 8259 §8.1 lets a parser ignore a UTF-8 byte order mark, which some editors and shells
# write; the management API's parser does (docs/decisions.md), so this one does too.
_BOM = b"\xef\xbb\xbf"


class RequestStage:
    name = "request"

    async def on_request(self, ctx: GatewayContext) -> None:
        raw = ctx.raw_body or b"{}"
        if raw.startswith(_BOM):
            raw = raw[len(_BOM) :]  # a mark alone is then no JSON, as there
        try:
            body = InvocationCreate.model_validate_json(raw)
        except PydanticValidationError as exc:
            reason, message, errors = field_errors(exc.errors())
            raise ValidationError(message, errors=errors, reason=reason) from None
        ctx.app_id, ctx.api, ctx.version = body.app_id, body.api, body.version
        ctx.args, ctx.debug = body.args, body.debug
