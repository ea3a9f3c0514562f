"""The `from` / `to` query parameters of every list and chart that takes a time range.

Times are shown in whole seconds, so ranges compare in whole seconds too: a fraction of a second
in `from` or `to` is dropped. Rows shown with the same time are then always in or out of a range
together (at full precision `to=…T10:00:00.5Z` kept a row of 10:00:00.2 and dropped one of
10:00:00.7, both shown `…T10:00:00Z`), and consecutive ranges `[a, b)`, `[b, c)` still meet."""

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query

from apiforge.core.errors import ValidationError

TIME_HINT = "an ISO 8601 time or date, e.g. 2026-01-31T00:00:00Z"

From = Annotated[
    str | None,
    Query(alias="from", max_length=40, description=f"Inclusive, whole seconds: {TIME_HINT}"),
]
To = Annotated[
    str | None,
    Query(alias="to", max_length=40, description=f"Exclusive, whole seconds: {TIME_HINT}"),
]


def parse_time(name: str, raw: str | None, errors: list[dict[str, str]]) -> datetime | None:
    """A UTC time in whole seconds (a fraction is dropped), or None when absent; a malformed one
    is noted in `errors` as `name`'s. A time without an offset is UTC, like every time the API
    shows."""
    return _whole(_exact_time(name, raw, errors))


def _exact_time(name: str, raw: str | None, errors: list[dict[str, str]]) -> datetime | None:
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
    """`from` and `to` in whole seconds, `to` not before `from` as written (`…:00.7Z` to
    `…:00.3Z` is reversed, though both are the same second). With `errors`, problems are added
    to it (the caller raises with its own); without, they are a 400 at once."""
    found: list[dict[str, str]] = [] if errors is None else errors
    start, end = _exact_time("from", since, found), _exact_time("to", until, found)
    if start is not None and end is not None and start > end:
        found.append({"field": "to", "message": "must not be before from"})
    if errors is None and found:
        raise ValidationError(errors=found)
    return _whole(start), _whole(end)


def _whole(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(microsecond=0)
