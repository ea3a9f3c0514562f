"""The idempotency headers in the platform's OpenAPI document: every write accepts them."""

from typing import Any

WRITES = ("post", "put", "patch", "delete")
# Writes made before there is a caller to scope a key to: the middleware passes them through
# (idempotency/middleware.py), so their documents must not promise a replay.
ANONYMOUS = frozenset({"/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/refresh"})
HEADERS: tuple[dict[str, Any], ...] = (
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": (
            '1-255 visible ASCII characters, quoted or bare (quoted, `\\"` and `\\\\` '
            "escapes count as the one character they stand for). The first successful answer is "
            "replayed for 24 h (`Idempotent-Replayed: 1`); 409 while it runs, 422 for another "
            "payload. See docs/idempotency.md."
        ),
        # Quoted with every character escaped: 2 quotes + 2 x 255.
        "schema": {"type": "string", "maxLength": 512},
    },
    {
        "name": "X-Request-Seq",
        "in": "header",
        "required": False,
        "description": "A sequence number of the calling credential; a seen one replays.",
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
    },
    {
        "name": "X-Idempotency-Token",
        "in": "header",
        "required": False,
        "description": (
            "A one-time token from `GET /api/v1/idempotency-tokens`; a spent one is 409 "
            "`duplicate_request`."
        ),
        "schema": {"type": "string"},
    },
)


def document_idempotency(schema: dict[str, Any]) -> None:
    """Add the three headers to every write operation under `/api/v1/` that has a caller
    (in place)."""
    for path, item in schema.get("paths", {}).items():
        if not path.startswith("/api/v1/") or path in ANONYMOUS:
            continue
        for method in WRITES:
            operation = item.get(method)
            if operation is None:
                continue
            parameters = operation.setdefault("parameters", [])
            present = {(p.get("in"), p.get("name", "").lower()) for p in parameters}
            for header in HEADERS:
                if ("header", header["name"].lower()) not in present:
                    parameters.append(dict(header))
