"""The gateway's path in the platform's OpenAPI document (it is not a FastAPI route)."""

from typing import Any

from apiforge.engine.schemas import InvocationCreate

_ERRORS = {
    "400": "Invalid body or args (`missing_parameters`, `invalid_arguments`, ...)",
    "401": "Missing or invalid credentials, or end-user token",
    "402": "Insufficient RU balance",
    "403": "Key not allowed, app not enabled, API disabled, permission denied",
    "404": "App, version or API not found",
    "413": "Body too large",
    "422": "A per-call limit was exceeded",
    "429": "Rate limited",
}


def invocation_path() -> dict[str, Any]:
    schema = InvocationCreate.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    responses: dict[str, Any] = {
        "200": {
            "description": "The envelope; `data` holds the API's returned step outputs",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}},
        }
    }
    for status, text in _ERRORS.items():
        responses[status] = {"description": text}
    return {
        "post": {
            "tags": ["gateway"],
            "summary": "Call an API (THE GATEWAY)",
            "description": (
                "Credentials: `X-Api-Key` (`app-`/`pk-`/`ws-` keys), HMAC signature headers, or a "
                "console `Authorization: Bearer` token for members of the app's workspace. "
                "End-user tokens: `Authorization: Bearer` with a key, `X-End-User-Token` with a "
                "console token. Optional `Idempotency-Key`."
            ),
            "operationId": "invoke",
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": responses,
        }
    }


def envelope_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["code", "message", "data"],
        "properties": {
            "code": {"type": "integer"},
            "message": {"type": "string"},
            "data": {},
        },
    }
