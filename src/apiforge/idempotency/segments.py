"""The answer log's files (`answer_log.py`): records appended to segment files, the index a
segment gets once it is sealed, and what the log knows of each segment. No threads, no asyncio,
no database.

A record, little-endian:

    header   magic "AFr2", payload size, CRC-32C, seq, created and expires (unix µs), HTTP status,
             flags, record id (32 bytes), payload fingerprint (32 bytes), headers' length
    payload  the kept response headers (JSON), then the body

The CRC covers everything after itself, so a record torn by a power loss (a prefix written, or
blocks of it never reaching the disk) is found when the segment is read again, and the segment
is cut there. CRC-32C (Castagnoli, as iSCSI, ext4 and RocksDB check their blocks) is computed by
`google-crc32c` with the CPU's CRC instruction: about 1 µs for `make bench`'s 17.6 KB answer,
where zlib's CRC-32 took 9 to 14 µs (fed 5 KiB at a time, since above that it releases the GIL,
and on the server's one core every such release hands the GIL to another thread and back).
Files of the first format ("AFr1", "AFx1": zlib's CRC-32) are still read and checked as such.

An index, written once when its segment is sealed and never changed:

    head     magic "AFx2", entry count, first and last seq, latest expiry, CRC-32C of the entries
    entries  sorted by record id: id (32 bytes), offset, length, expires, flags, seq

and read by binary search over a memory map.
"""

import mmap
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import google_crc32c

from apiforge.tools.durable import fsync_path

RECORD = struct.Struct("<4sIIQqqHH32s32sI")
_PREFIX = struct.Struct("<4sII")  # magic, size, CRC: what the CRC does not cover
_COVERED = struct.Struct("<QqqHH32s32sI")  # the rest of the header, covered by the CRC
RECORD_MAGIC = b"AFr2"
INDEX_HEAD = struct.Struct("<4sIQQqI")
INDEX_MAGIC = b"AFx2"
ENTRY = struct.Struct("<32sQIqHQ")
MARKED = 1  # committed with effects: valid only with its marker row (`answer_log.py`)
LOST = 2  # a tombstone: the answer's effects committed, its record was lost in a crash
ID_SIZE = 32  # a record id's bytes (a SHA-256 digest), in records, indexes and marker rows
MAX_PAYLOAD = 256 * 1024 * 1024  # a larger size in a header is damage, not a record
_CHUNK = 5120  # zlib's GIL-release threshold: it releases above 5 KiB (the first format)
_CRC_FROM = 12  # the CRC covers the header from the field after it


@dataclass(frozen=True, slots=True)
class Record:
    """Where one record is and what its header says (the payload is read on demand)."""

    offset: int
    length: int  # header and payload
    seq: int
    created_us: int
    expires_us: int
    status: int
    flags: int
    record_id: bytes
    fingerprint: bytes
    headers_length: int


def crc32c(parts: Iterable[bytes | memoryview], value: int = 0) -> int:
    """CRC-32C of `parts` in sequence: the checksum of the files this build writes. The
    library takes `bytes` only: a view (a read's, an index's map) is copied first, off the
    calls' path."""
    for part in parts:
        value = google_crc32c.extend(value, part if type(part) is bytes else bytes(part))
    return value


def crc32(parts: Iterable[bytes | memoryview], value: int = 0) -> int:
    """zlib's CRC-32 of `parts` in sequence, 5 KiB at a time: the first format's checksum."""
    for part in parts:
        view = memoryview(part)
        for start in range(0, len(view), _CHUNK):
            value = zlib.crc32(view[start : start + _CHUNK], value)
    return value


# Each magic with the checksum its file was written with: every format this build reads.
_RECORD_CHECKSUMS = {RECORD_MAGIC: crc32c, b"AFr1": crc32}
_INDEX_CHECKSUMS = {INDEX_MAGIC: crc32c, b"AFx1": crc32}
Checksum = Callable[[Iterable[bytes | memoryview]], int]


def pack(
    *,
    seq: int,
    created_us: int,
    expires_us: int,
    status: int,
    flags: int,
    record_id: bytes,
    fingerprint: bytes,
    headers: bytes,
    body: bytes,
) -> list[bytes]:
    """One record as the buffers to write in order (header, headers, body: no copy of the body)."""
    size = len(headers) + len(body)
    if size > MAX_PAYLOAD:
        raise ValueError("answer too large for the log")
    covered = _COVERED.pack(
        seq, created_us, expires_us, status, flags, record_id, fingerprint, len(headers)
    )
    crc = crc32c((covered, headers, body))
    return [_PREFIX.pack(RECORD_MAGIC, size, crc) + covered, headers, body]


def _parse(offset: int, head: bytes) -> tuple[Record, int, int, Checksum] | None:
    """The record a header describes, its payload size, stored CRC and the checksum that CRC
    is of; None when it is not one."""
    if len(head) < RECORD.size:
        return None
    (magic, size, crc, seq, created, expires, status, flags, rid, fp, hlen) = RECORD.unpack(head)
    checksum = _RECORD_CHECKSUMS.get(magic)
    if checksum is None or size > MAX_PAYLOAD or hlen > size:
        return None
    record = Record(offset, RECORD.size + size, seq, created, expires, status, flags, rid, fp, hlen)
    return record, size, crc, checksum


def read(fd: int, offset: int, length: int) -> tuple[Record, bytes, bytes] | None:
    """The record at `offset` with its headers and body, checked (CRC, length); None if it is
    damaged or not there (yet)."""
    data = os.pread(fd, length, offset)
    parsed = _parse(offset, data[: RECORD.size])
    if parsed is None:
        return None
    record, _, crc, checksum = parsed
    if record.length != length or len(data) != length:
        return None
    view = memoryview(data)
    if checksum((view[_CRC_FROM:],)) != crc:
        return None
    payload = view[RECORD.size :]
    return record, bytes(payload[: record.headers_length]), bytes(payload[record.headers_length :])


@dataclass(slots=True)
class Scan:
    """Records of a segment read from `offset` on; `end` is where the intact ones stop."""

    records: list[Record]
    end: int


def scan(path: str | Path, offset: int = 0) -> Scan:
    """Every intact record from `offset` up to the first that is torn, damaged or incomplete
    (a power loss's tail, or a record still being written by another process)."""
    records: list[Record] = []
    with open(path, "rb", buffering=1 << 20) as file:
        file.seek(offset)
        while True:
            head = file.read(RECORD.size)
            parsed = _parse(offset, head)
            if parsed is None:
                break
            record, size, crc, checksum = parsed
            payload = file.read(size)
            if len(payload) != size or checksum((head[_CRC_FROM:], payload)) != crc:
                break
            records.append(record)
            offset += record.length
    return Scan(records, offset)


@dataclass(frozen=True, slots=True)
class Entry:
    """An index entry: where a record id's record is in its segment."""

    record_id: bytes
    offset: int
    length: int
    expires_us: int
    flags: int
    seq: int


def write_index(
    path: Path,
    entries: Iterable[tuple[bytes, int, int, int, int, int]],
    first_seq: int,
    last_seq: int,
) -> None:
    """Write a sealed segment's index atomically (a temporary file, synced, renamed, and the
    directory synced). `entries`: (record id, offset, length, expires, flags, seq) as `Entry`
    has them, one per id, in any order."""
    ordered = sorted(entries)
    body = b"".join(ENTRY.pack(*entry) for entry in ordered)
    latest = max((entry[3] for entry in ordered), default=0)
    head = INDEX_HEAD.pack(INDEX_MAGIC, len(ordered), first_seq, last_seq, latest, crc32c((body,)))
    temporary = path.with_suffix(".tmp")
    with open(temporary, "wb") as file:
        file.write(head)
        file.write(body)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    fsync_path(path.parent)


class Index:
    """A sealed segment's index, memory-mapped; `find` is a binary search over record ids."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size < INDEX_HEAD.size:
                raise ValueError(f"{path.name}: not an index")
            self._map = mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ)
        magic, count, first, last, latest, crc = INDEX_HEAD.unpack_from(self._map, 0)
        body = memoryview(self._map)[INDEX_HEAD.size :]
        try:
            checksum = _INDEX_CHECKSUMS.get(magic)
            if checksum is None or len(body) != count * ENTRY.size or checksum((body,)) != crc:
                raise ValueError(f"{path.name}: damaged index")
        finally:
            body.release()
        self.count, self.first_seq, self.last_seq, self.max_expires_us = count, first, last, latest

    def find(self, record_id: bytes) -> Entry | None:
        data, size, low, high = self._map, ENTRY.size, 0, self.count
        while low < high:
            middle = (low + high) // 2
            start = INDEX_HEAD.size + middle * size
            key = data[start : start + 32]
            if key < record_id:
                low = middle + 1
            elif key > record_id:
                high = middle
            else:
                return Entry(*ENTRY.unpack_from(data, start))
        return None

    def ids(self) -> Iterator[bytes]:
        data = self._map
        for n in range(self.count):
            start = INDEX_HEAD.size + n * ENTRY.size
            yield data[start : start + 32]

    def close(self) -> None:
        self._map.close()


@dataclass(frozen=True, slots=True)
class Found:
    """A stored answer's record: read it with `AnswerLog.read`."""

    path: Path
    offset: int
    length: int
    expires_us: int
    lost: bool

    def live(self) -> bool:
        """Not expired yet: an answer a request with its key is given."""
        return self.expires_us > time.time_ns() // 1000


@dataclass(eq=False, slots=True)
class Segment:
    """A segment file and what the log knows of it."""

    number: int
    path: Path
    fd: int = -1  # the owner's, while the segment is open
    size: int = 0
    records: int = 0
    opened: float = field(default_factory=time.monotonic)
    flushed: int = 0  # answers written (by flushes, under the lock)
    settled: int = 0  # answers confirmed or forgotten (on the loop): sealable when equal
    first_seq: int = 0
    last_seq: int = 0
    # Open segments (owner): record id -> (offset, length, expires, flags, seq), once committed.
    entries: dict[str, tuple[int, int, int, int, int]] | None = field(default_factory=dict)
    index: Index | None = None
    sealing: bool = False

    @property
    def index_path(self) -> Path:
        return self.path.with_suffix(".idx")


def find_sealed(sealed: list[Segment], key: bytes) -> Found | None:
    """The newest entry of record id `key` in the sealed segments' indexes."""
    for segment in reversed(sealed):
        assert segment.index is not None
        entry = segment.index.find(key)
        if entry is not None:
            lost = bool(entry.flags & LOST)
            return Found(segment.path, entry.offset, entry.length, entry.expires_us, lost)
    return None


def index_segment(segment: Segment) -> None:
    """Write a segment's index from its entries (written, synced, renamed) and map it."""
    entries = segment.entries or {}
    write_index(
        segment.index_path,
        ((bytes.fromhex(rid), *entry) for rid, entry in entries.items()),
        segment.first_seq,
        segment.last_seq,
    )
    segment.index = Index(segment.index_path)
