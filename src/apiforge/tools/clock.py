"""The one clock: timezone-aware UTC, truncated to whole seconds for storage and display."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    """Format as `YYYY-MM-DDTHH:MM:SSZ` (spec 003 §2.4.4); naive values are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
