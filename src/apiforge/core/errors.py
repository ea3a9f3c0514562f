"""One error hierarchy for both edges; one renderer turns any of them into the envelope."""

from typing import Any


class ApiforgeError(Exception):
    """A failure the caller should see: HTTP status, stable snake_case reason, readable message."""

    status = 400
    reason = "bad_request"
    message = "Bad request"
    keep_changes = False  # True: the unit of work commits before the error is rendered

    def __init__(
        self,
        message: str | None = None,
        *,
        reason: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.message = message or self.message
        self.reason = reason or self.reason
        self.status = status or self.status
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(self.message)

    def payload(self) -> dict[str, Any]:
        return {"error": self.reason, **self.details}


class ValidationError(ApiforgeError):
    status = 400
    reason = "invalid_input"
    message = "Invalid input"

    def __init__(
        self,
        message: str | None = None,
        *,
        errors: list[dict[str, str]] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message, reason=reason, details={"errors": errors or []})


class AuthenticationError(ApiforgeError):
    status = 401
    reason = "unauthenticated"
    message = "Authentication required"


class PaymentRequiredError(ApiforgeError):
    status = 402
    reason = "insufficient_balance"
    message = "Insufficient balance"


class ForbiddenError(ApiforgeError):
    status = 403
    reason = "forbidden"
    message = "Forbidden"


class NotFoundError(ApiforgeError):
    status = 404
    reason = "not_found"
    message = "Not found"


class ConflictError(ApiforgeError):
    status = 409
    reason = "conflict"
    message = "Conflict"


class PayloadTooLargeError(ApiforgeError):
    status = 413
    reason = "payload_too_large"
    message = "Request body too large"


class RateLimitedError(ApiforgeError):
    status = 429
    reason = "too_many_requests"
    message = "Too many requests"

    def __init__(self, message: str | None = None, *, retry_after: int, reason: str | None = None):
        super().__init__(
            message,
            reason=reason,
            details={"retryAfter": retry_after},
            headers={"Retry-After": str(retry_after)},
        )


class UpstreamError(ApiforgeError):
    status = 502
    reason = "upstream_error"
    message = "Upstream service failed"


class UnavailableError(ApiforgeError):
    status = 503
    reason = "unavailable"
    message = "Service unavailable"


class DatabaseUnavailableError(UnavailableError):
    """503 for a request whose database connection was lost midway (a failover, a terminated
    backend, a restart) or whose database stopped answering; the next request connects anew."""

    reason = "database_unavailable"
    message = "The database cannot be reached right now; retry shortly"

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})


class DatabaseBusyError(UnavailableError):
    """503 for a request that found no pooled database connection free within the pool's
    timeout, all held by other requests: this process is busy (a burst past the pool's size,
    slow statements), not the database down (`database_unavailable`)."""

    reason = "database_busy"
    message = "Too many requests are waiting for the database; retry shortly"

    def __init__(self) -> None:
        super().__init__(headers={"Retry-After": "1"})
