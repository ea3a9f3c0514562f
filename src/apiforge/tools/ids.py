"""Sortable, URL-safe identifiers: 48-bit millisecond time + 80 random bits, Crockford base32."""

import base64
import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# RFC 4648 base32 digits -> Crockford's (lowercase): the C encoder does the 5-bit split.
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
_RANDOM_BYTES = 10  # 80 bits
_BATCH = 4096 // _RANDOM_BYTES * _RANDOM_BYTES


class _Entropy:
    """os.urandom read 4 KB at a time: one system call per ~400 ids instead of one per id (each
    call also hands the GIL to whichever thread waits for it, a cost paid per request)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = b""
        self._offset = 0

    def forget(self) -> None:
        """After a fork: the child must never reuse its parent's bytes."""
        self._lock = threading.Lock()
        self._buffer, self._offset = b"", 0

    def take(self) -> int:
        with self._lock:
            if self._offset >= len(self._buffer):
                self._buffer, self._offset = os.urandom(_BATCH), 0
            start = self._offset
            self._offset = start + _RANDOM_BYTES
            return int.from_bytes(self._buffer[start : start + _RANDOM_BYTES], "big")


_entropy = _Entropy()
os.register_at_fork(after_in_child=_entropy.forget)


def new_id() -> str:
    """Return a 26-character id that sorts by creation time (ULID layout, lowercase)."""
    value = (int(time.time() * 1000) << 80) | _entropy.take()
    # 160 bits encode to 32 digits; the first 6 stand for the 30 zero bits above the 130 of an
    # id (whose top 2 bits are zero too, as in a ULID).
    return base64.b32encode(value.to_bytes(20, "big"))[6:].translate(_CROCKFORD).decode()


def is_id(text: str) -> bool:
    """Cheap syntactic check so malformed ids fail fast with 404 instead of a query."""
    return len(text) == 26 and all(c in _ALPHABET for c in text)
