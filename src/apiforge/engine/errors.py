"""Errors of the step engine: bad definitions (on save), bad arguments and failed steps (per call).

Definition errors name the offending place as `steps.<stepId>.<field>` (or `params.<i>.<attr>`,
`returnSteps`, ...) so the builder can point at it; call-time errors carry the step id in
`data.stepId` so a caller (and a debug trace) knows which step refused.
"""

from typing import Any

from apiforge.core.errors import ValidationError
from apiforge.engine.base import StepFailedError


def step_field(step_id: str | None, field: str) -> str:
    """The path a definition error names: `steps.<id>.<field>`, or `field` alone."""
    if step_id is None:
        return field
    return f"steps.{step_id}.{field}" if field else f"steps.{step_id}"


class DefinitionError(ValidationError):
    """An API definition refused on save (400 `invalid_definition`).

    `DefinitionError("posts", "filter._and.0", "unknown field 'x'")` renders as
    `data.errors == [{"field": "steps.posts.filter._and.0", "message": "unknown field 'x'"}]`.
    `step_id=None` takes `field` as the whole path (params, returnSteps, `compile_value` paths).
    """

    reason = "invalid_definition"
    message = "Invalid API definition"

    def __init__(self, step_id: str | None, field: str, message: str) -> None:
        self.step_id = step_id
        self.field = step_field(step_id, field)
        self.detail = message
        super().__init__(
            f"{self.field}: {message}", errors=[{"field": self.field, "message": message}]
        )


class ArgumentsError(ValidationError):
    """The call's `args` do not match the API's params (400; missing ones named)."""

    reason = "invalid_arguments"
    message = "Invalid parameters"

    def __init__(self, message: str, errors: list[dict[str, str]], *, reason: str | None = None):
        super().__init__(message, errors=errors, reason=reason)


class MissingArgumentsError(ArgumentsError):
    reason = "missing_parameters"
    message = "Missing required parameters"

    def __init__(self, names: list[str]) -> None:
        super().__init__(
            self.message,
            [{"field": name, "message": "required parameter is missing"} for name in names],
        )


def step_error(
    step_id: str,
    message: str,
    *,
    reason: str = "step_failed",
    status: int = 400,
    field: str | None = None,
    extra: dict[str, Any] | None = None,
) -> StepFailedError:
    """A call-time failure attributed to a step (the renderer shows `data.stepId`)."""
    details: dict[str, Any] = {"stepId": step_id}
    if field is not None:
        details["field"] = field
    if extra:
        details.update(extra)
    return StepFailedError(message, reason=reason, status=status, details=details)
