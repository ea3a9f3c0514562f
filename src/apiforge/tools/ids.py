"""Sortable, URL-safe identifiers: 48-bit millisecond time + 80 random bits, Crockford base32."""

import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id() -> str:
    """Return a 26-character id that sorts by creation time (ULID layout, lowercase)."""
    value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_id(text: str) -> bool:
    """Cheap syntactic check so malformed ids fail fast with 404 instead of a query."""
    return len(text) == 26 and all(c in _ALPHABET for c in text)
