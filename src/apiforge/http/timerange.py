"""The `from` / `to` query parameters of every list and chart that takes a time range."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query

from apiforge.core.errors import ValidationError

TIME_HINT = "an ISO 8601 time or date, e.g. 2026-01-31T00:00:00Z"

From = Annotated[
    str | None, Query(alias="from", max_length=40, description=f"Inclusive: {TIME_HINT}")
]
To = Annotated[str | None, Query(alias="to", max_length=40, description=f"Exclusive: {TIME_HINT}")]


def parse_time(name: str, raw: str | None, errors: list[dict[str, str]]) -> datetime | None:
    """A UTC time, or None when absent; a malformed one is noted in `errors` as `name`'s.
    A time without an offset is UTC, like every time the API shows."""
    if raw is None or raw == "":
        return None
    try:
        value = datetime.fromisoformat(raw)
        # An offset can carry a time at the calendar's edge past it (0001-01-01T00:00+01:00).
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        errors.append({"field": name, "message": f"must be {TIME_HINT}"})
        return None


def time_range(
    since: str | None, until: str | None, errors: list[dict[str, str]] | None = None
) -> tuple[datetime | None, datetime | None]:
    """`from` and `to`, `to` not before `from`. With `errors`, problems are added to it (the
    caller raises with its own); without, they are a 400 at once."""
    found: list[dict[str, str]] = [] if errors is None else errors
    start, end = parse_time("from", since, found), parse_time("to", until, found)
    if start is not None and end is not None and start > end:
        found.append({"field": "to", "message": "must not be before from"})
    if errors is None and found:
        raise ValidationError(errors=found)
    return start, end
