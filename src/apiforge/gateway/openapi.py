"""Additions to the platform's OpenAPI document: the gateway's path and its security schemes (it
is not a FastAPI route) and the error envelope every route answers (FastAPI would document its
own 422 body instead)."""

from typing import Any

from fastapi.security.base import SecurityBase

from apiforge.accounts.deps import ANY_KEY, CONSOLE_TOKEN
from apiforge.engine.schemas import SERVER_ERRORS, InvocationCreate
from apiforge.http.envelope import error_schema

_ERRORS = {
    "400": "Invalid body or args (`missing_parameters`, `invalid_arguments`, ...)",
    "401": "Missing or invalid credentials, or end-user token",
    "402": "Insufficient RU balance",
    "403": "Key not allowed, app not enabled, API disabled, permission denied",
    "404": "App, version or API not found",
    "410": "The version reached its sunset date (`version_sunset`)",
    "413": "Body too large",
    "422": "A per-call limit was exceeded",
    "429": "Rate limited",
}


# A key in `X-Api-Key`, or a console token for members of the app's workspace.
_SCHEMES: tuple[SecurityBase, ...] = (ANY_KEY, CONSOLE_TOKEN)


def document_gateway_security(schema: dict[str, Any]) -> None:
    """Declare the gateway's security schemes (in place): no FastAPI route may carry them."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    for scheme in _SCHEMES:
        schemes.setdefault(
            scheme.scheme_name, scheme.model.model_dump(by_alias=True, exclude_none=True)
        )


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
    responses["5XX"] = {"description": SERVER_ERRORS, "content": _error_content()}
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
            # HMAC signature headers are the third way in (docs/signing.md): an app's own document
            # declares them, per API (builder/openapi.py).
            "security": [{scheme.scheme_name: []} for scheme in _SCHEMES],
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema}}},
            "responses": responses,
        }
    }


_INVALID_INPUT = (
    "Invalid input: `invalid_input`, `missing_parameters` (message `Missing required "
    "parameters`) or `malformed_json`; `data.errors` names the fields"
)
_OTHER_ERRORS = "Any other client error, in the envelope; `data.error` names it"


def _error_content() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _is_fastapi_422(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema", {})
    return bool(schema.get("$ref", "").endswith("/HTTPValidationError"))


def _document_operation_errors(responses: dict[str, Any]) -> None:
    if "422" in responses and _is_fastapi_422(responses["422"]):
        # Request validation answers 400 in the envelope (http/handlers.py), never this 422.
        del responses["422"]
        responses.setdefault("400", {"description": _INVALID_INPUT})
    for status, response in responses.items():
        if status.startswith("4") and "content" not in response:
            response["content"] = _error_content()
    responses.setdefault("4XX", {"description": _OTHER_ERRORS, "content": _error_content()})


def document_errors(schema: dict[str, Any]) -> None:
    """Describe the envelope of 4xx answers on every operation, in place: request validation is
    400 (not FastAPI's 422 `{"detail": [...]}`, which no route answers)."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if isinstance(operation, dict) and "responses" in operation:
                _document_operation_errors(operation["responses"])
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.setdefault("Error", error_schema())


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
