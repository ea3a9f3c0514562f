"""The `{code, message, data}` envelope (spec 003 §2.3) for successes and errors."""

import json
from collections.abc import Mapping
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel
from starlette.responses import Response

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    code: int = 200
    message: str = "success"
    data: T


def ok(data: T, *, code: int = 200, message: str = "success") -> Envelope[T]:
    return Envelope[T](code=code, message=message, data=data)


def envelope_bytes(code: int, message: str, data: Any) -> bytes:
    envelope = {"code": code, "message": message, "data": data}
    try:
        return orjson.dumps(envelope)
    except TypeError:
        # An error may echo the client's own text (a field name it sent), and `"\ud800"` is
        # valid JSON for a lone surrogate that orjson refuses to write: escape it back instead.
        return json.dumps(envelope, separators=(",", ":")).encode()


def error_response(
    status: int,
    reason: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body = envelope_bytes(status, message, {"error": reason, **(details or {})})
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def error_schema() -> dict[str, Any]:
    """The envelope of every error (http/envelope.py `error_response`)."""
    return {
        "type": "object",
        "required": ["code", "message", "data"],
        "properties": {
            "code": {"type": "integer", "minimum": 400, "maximum": 599},
            "message": {"type": "string"},
            "data": {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"type": "string", "description": "stable snake_case reason"},
                    "errors": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["field", "message"],
                            "properties": {
                                "field": {"type": "string"},
                                "message": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    }
