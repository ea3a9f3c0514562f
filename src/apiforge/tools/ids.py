"""Sortable, URL-safe identifiers: 48-bit millisecond time + 80 random bits, Crockford base32."""

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
# Every 10-bit value as its two digits: an id's 130 bits are 13 lookups (the standard library's
# base32 encoder is a Python loop over 5-byte groups on this Python, several times slower).
_PAIRS = [a + b for a in _ALPHABET for b in _ALPHABET]
_SHIFTS = tuple(range(120, -1, -10))
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
    pairs = _PAIRS  # `_encode` inlined: ids are minted on every call's path
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def first_id_at(epoch_seconds: float) -> str:
    """The smallest id minted at that time: every id minted earlier sorts below it (old rows
    of a table keyed by these ids are found on its primary key)."""
    return _encode(int(epoch_seconds * 1000) << 80)


def _encode(value: int) -> str:
    # 26 digits of 5 bits: 130 bits, the top 2 zero (as in a ULID).
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _SHIFTS])


def is_id(text: str) -> bool:
    """Cheap syntactic check so malformed ids fail fast with 404 instead of a query."""
    return len(text) == 26 and all(c in _ALPHABET for c in text)
