"""Exception handlers: every failure leaves in the envelope with a stable reason."""

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match

from apiforge.core.errors import ApiforgeError
from apiforge.http.envelope import error_response

_STATUS_REASONS = {
    404: ("not_found", "Not found"),
    405: ("method_not_allowed", "Method not allowed"),
    413: ("payload_too_large", "Request body too large"),
    415: ("unsupported_media_type", "Unsupported media type"),
}
_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "json_invalid": "is not valid JSON",
}
# The one field error of a body that is not JSON, on both edges (the gateway's parser says so too).
NOT_JSON = [{"field": "body", "message": _MESSAGES["json_invalid"]}]
JSON_TYPE = "application/json"


async def _apiforge_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiforgeError)
    return error_response(exc.status, exc.reason, exc.message, exc.details, exc.headers)


_METHODS = ("DELETE", "GET", "PATCH", "POST", "PUT")


def _allowed_methods(request: Request) -> str | None:
    """Every method the path takes. Starlette's 405 names only the first route matching the
    path, while FastAPI makes one route per method (`GET` and `POST` on one path: `Allow: GET`).
    Asked of the router one method at a time, so included routers answer too. `HEAD` goes with
    `GET` (HeadMiddleware)."""
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    if "GET" in allowed:
        allowed.insert(allowed.index("GET") + 1, "HEAD")
    return ", ".join(allowed) or None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's own refusal of a body it cannot parse (nesting beyond the JSON decoder, bytes
        # that are not UTF-8): the same envelope as any other malformed body.
        return error_response(
            400, "malformed_json", "Malformed JSON body", {"errors": NOT_JSON}, exc.headers
        )
    headers = exc.headers
    if exc.status_code == 405:
        allow = _allowed_methods(request)
        headers = {**(headers or {}), "Allow": allow} if allow else headers
    reason, message = _STATUS_REASONS.get(exc.status_code, ("http_error", str(exc.detail)))
    return error_response(exc.status_code, reason, message, headers=headers)


def field_errors(raw: Sequence[Mapping[str, Any]]) -> tuple[str, str, list[dict[str, str]]]:
    """Turn pydantic errors into (reason, message, [{field, message}])."""
    errors = []
    types = set()
    for err in raw:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
        kind = str(err.get("type", ""))
        types.add(kind)
        message = (
            _MESSAGES.get(kind) or _length_message(kind, err) or str(err.get("msg", "is invalid"))
        )
        # A decode error's location is a character offset, not a field.
        field = "body" if kind == "json_invalid" else ".".join(loc) or "body"
        errors.append({"field": field, "message": message})
    if "json_invalid" in types:
        return "malformed_json", "Malformed JSON body", errors
    if types == {"missing"}:
        return "missing_parameters", "Missing required parameters", errors
    return "invalid_input", "Invalid input", errors


def _length_message(kind: str, err: Mapping[str, Any]) -> str | None:
    """A text's length bound in characters: pydantic words a bound checked after a validator
    (`Annotated[Text, Query(max_length=100)]`) as "at most 100 items after validation"."""
    if kind not in ("too_long", "too_short") or not isinstance(err.get("input"), str):
        return None
    ctx = err.get("ctx") or {}
    bound = ctx.get("max_length" if kind == "too_long" else "min_length")
    if not isinstance(bound, int):
        return None
    most = "at most" if kind == "too_long" else "at least"
    return f"String should have {most} {bound} character{'' if bound == 1 else 's'}"


async def _stale_row(_request: Request, exc: Exception) -> Response:
    """An ORM UPDATE conditional on the version it read matched no row: another request changed
    the row meanwhile (optimistic locking, idempotency/locking.py). Nothing was written."""
    return error_response(
        409,
        "concurrent_update",
        "Another request changed this resource at the same time; reload it and try again",
    )


def _not_json(raw: Sequence[Mapping[str, Any]]) -> bool:
    """FastAPI decodes a body only when its `Content-Type` is JSON; otherwise the model is handed
    the raw bytes, and its complaint ("Input should be a valid dictionary") would hide the cause."""
    return any(
        tuple(err.get("loc", ())) == ("body",) and isinstance(err.get("input"), bytes)
        for err in raw
    )


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if _not_json(raw):
        message = f"Content-Type must be {JSON_TYPE}"
        return error_response(415, "unsupported_media_type", message, {"expected": JSON_TYPE})
    reason, message, errors = field_errors(raw)
    return error_response(400, reason, message, {"errors": errors})


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiforgeError, _apiforge_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StaleDataError, _stale_row)
