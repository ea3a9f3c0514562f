"""The one clock: timezone-aware UTC, truncated to whole seconds for storage and display."""

import time
from datetime import UTC, datetime
from typing import Any

# How far ahead of this node's clock a token's `iat` may be: another node issued it, and nodes'
# clocks differ a little (PyJWT alone refuses any `iat` ahead of now, so a token issued by a node
# a second ahead was refused by the others until that second passed).
CLOCK_SKEW_SECONDS = 60


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime) -> str:
    """Format as `YYYY-MM-DDTHH:MM:SSZ` (spec 003 §2.4.4); naive values are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    # Not strftime: its %Y leaves years before 1000 unpadded ("999-…", which sorts after "1999").
    # OverflowError for a time that UTC puts outside years 1-9999 (0001-01-01T00:00+01:00).
    return value.astimezone(UTC).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def issued_in_time(claims: dict[str, Any]) -> bool:
    """A JWT's `iat` is a number no further ahead of this clock than nodes' clocks may differ.
    Decode with `verify_iat` off and check this instead."""
    issued = claims.get("iat")
    if not isinstance(issued, int | float) or isinstance(issued, bool):
        return False
    return issued <= time.time() + CLOCK_SKEW_SECONDS
