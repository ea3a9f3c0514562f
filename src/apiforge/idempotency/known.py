"""Which idempotency records may exist: a Bloom filter over record ids, so a fresh key's claim
on the embedded database is decided without reading the database.

A gateway call that sends a key it never sent before (nearly every keyed call) must still learn
that no answer is stored for it (in the answer log, `answer_log.py`, or a row of the portable
path). Asking SQLite costs the call a read (~8 us alone, several times
that among the writes of a loaded server); asking this filter costs a few bit tests. Record ids
are SHA-256 hex digests, so the filter's bit positions are slices of the id itself.

The filter may answer "maybe" for an id that has no row (then the database is read, as before),
never "no" for an id whose row this process or an earlier one wrote: it holds every id the rows
held when it was loaded, and every id this process claims from its creation on (before the row
is written). Rows written by another process while this one runs are not seen — the embedded
database has one server process, as charging assumes; should a second one claim a key, the
answer's conditional write still refuses the later call (`IdempotencyStore.answer_row`).
Expired rows stay in the filter until it is loaded again, which happens once as many ids were
added as it was sized for.
"""

import asyncio
import sqlite3
import time
from collections.abc import Callable, Collection, Iterable

import structlog

log = structlog.get_logger(__name__)

_HASHES = 4  # bit positions per id, each from 8 hex digits of it
_SHIFTS = tuple(range(32 * (_HASHES - 1), -1, -32))
_MIN_BITS_LOG2 = 20  # 128 KiB
_MAX_BITS_LOG2 = 30  # 128 MiB
_BITS_PER_ID = 16  # ~0.2 % false "maybe" with 4 positions at full capacity
_MAX_RECENT = 1_000_000
RETRY_SECONDS = 60.0


class _Bits:
    __slots__ = ("added", "array", "capacity", "mask")

    def __init__(self, expected: int) -> None:
        size = _MIN_BITS_LOG2
        while size < _MAX_BITS_LOG2 and (1 << size) < 2 * expected * _BITS_PER_ID:
            size += 1
        self.array = bytearray(1 << (size - 3))
        self.mask = (1 << size) - 1
        self.capacity = (1 << size) // _BITS_PER_ID
        self.added = 0

    def add(self, record_id: str) -> bool:
        """Set the id's bits; whether they were all set already (the id may have been added)."""
        array, mask = self.array, self.mask
        value = int(record_id[: 8 * _HASHES], 16)  # 32 bits per position
        seen = True
        for shift in _SHIFTS:
            bit = (value >> shift) & mask
            byte, flag = bit >> 3, 1 << (bit & 7)
            if not array[byte] & flag:
                seen = False
                array[byte] |= flag
        self.added += 1
        return seen

    def __contains__(self, record_id: str) -> bool:
        array, mask = self.array, self.mask
        value = int(record_id[: 8 * _HASHES], 16)
        for shift in _SHIFTS:
            bit = (value >> shift) & mask
            if not array[bit >> 3] & (1 << (bit & 7)):
                return False
        return True


class KnownKeys:
    """The record ids that may have a row; `may_hold` is True for all until loaded."""

    def __init__(self) -> None:
        self._bits = _Bits(0)
        self._ready = False
        # Ids claimed while not ready (before and during a load): the load adds them, so a row
        # the load's snapshot missed (not yet committed when it read) is still known.
        self._recent: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._retry_at = 0.0

    def add(self, record_id: str) -> bool:
        """Before a row for `record_id` is written by this process; `may_hold(record_id)` as it
        was before (one pass over the bits for a claim's question and its addition)."""
        if not self._ready:
            self._recent.add(record_id)
            return True
        bits = self._bits
        seen = bits.add(record_id)
        if bits.added > bits.capacity:
            self._ready = False  # full: "maybe" for every id until loaded again, larger
        return seen

    def may_hold(self, record_id: str) -> bool:
        """False only when no row of `record_id` exists (see the module's docstring)."""
        return not self._ready or record_id in self._bits

    def load_soon(
        self,
        path: str,
        in_flight: Collection[str] = (),
        logged: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        """Load the ids the rows of the database file at `path` hold now, and the answer log's
        (`logged()`, called here, iterated on the loading thread), in the background (on a
        thread and connection of its own); until then the filter answers "maybe".
        `in_flight`: the ids of claims whose answers may still be written (the store's live
        collection) — claimed before a reload, so kept only in the filter being replaced. They
        are taken here, with `logged()`: a call whose answer commits before the task starts is
        in neither otherwise, and its retry would be taken for a fresh key."""
        if self._ready or self._task is not None or time.monotonic() < self._retry_at:
            return
        task = self._load(path, list(in_flight), in_flight, logged())
        self._task = asyncio.get_running_loop().create_task(task)

    async def _load(
        self,
        path: str,
        claimed: list[str],
        in_flight: Collection[str],
        logged: Iterable[str],
    ) -> None:
        """`claimed`: the claims in flight when `logged` was taken (their answers may commit
        after it); `in_flight`, the live collection, is read again once the ids are read."""
        try:
            more = len(self._recent) + len(claimed)
            bits = await asyncio.to_thread(_read, path, more, logged)
            # On the loop's thread: none is added meanwhile.
            for record_id in (*claimed, *self._recent, *in_flight):
                bits.add(record_id)
            self._bits, self._recent, self._ready = bits, set(), True
        except Exception:  # "maybe" stays: claims read the database, as without the filter
            log.exception("idempotency_filter_load_failed")
            self._retry_at = time.monotonic() + RETRY_SECONDS
            if len(self._recent) > _MAX_RECENT:
                self._recent.clear()  # a later load reads their rows (committed by then)
        finally:
            self._task = None


def _read(path: str, more: int, logged: Iterable[str] = ()) -> _Bits:
    """A filter of the ids in the file and in `logged`, sized for them, `more` and as many
    again."""
    ids = list(logged)
    db = sqlite3.connect(path, timeout=5)
    try:
        db.execute("PRAGMA query_only=ON")
        db.execute("BEGIN")  # one snapshot for the count and the ids
        (count,) = db.execute("SELECT count(*) FROM idempotency_records").fetchone()
        bits = _Bits(count + len(ids) + more)
        for (record_id,) in db.execute("SELECT id FROM idempotency_records"):
            bits.add(record_id)
        for record_id in ids:
            bits.add(record_id)
        return bits
    finally:
        db.close()
