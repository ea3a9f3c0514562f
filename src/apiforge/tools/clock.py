"""The one clock: timezone-aware UTC, truncated to whole seconds for storage and display."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    """Format as `YYYY-MM-DDTHH:MM:SSZ` (spec 003 §2.4.4); naive values are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # Not strftime: its %Y leaves years before 1000 unpadded ("999-…", which sorts after "1999").
    # OverflowError for a time that UTC puts outside years 1-9999 (0001-01-01T00:00+01:00).
    return value.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"
