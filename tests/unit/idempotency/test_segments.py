"""The answer log's file formats: records that come back as written or not at all, scans that stop
at a torn tail, and sealed indexes found by binary search and refused when damaged."""

import hashlib
import os
import struct
import zlib
from pathlib import Path

import google_crc32c
import pytest

from apiforge.idempotency import segments
from apiforge.idempotency.segments import MARKED, Entry, Index


def rid(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def record(seq: int, body: bytes = b'{"code":200}', headers: bytes = b"") -> list[bytes]:
    return segments.pack(
        seq=seq,
        created_us=1_000,
        expires_us=2_000 + seq,
        status=200,
        flags=MARKED,
        record_id=rid(f"k{seq}"),
        fingerprint=rid(f"f{seq}"),
        headers=headers,
        body=body,
    )


def write(path: Path, *records: list[bytes]) -> list[int]:
    """Append the records; their offsets."""
    offsets = []
    with open(path, "ab") as file:
        for parts in records:
            offsets.append(file.tell())
            file.write(b"".join(parts))
    return offsets


def test_a_record_reads_back_exactly_as_written(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    body = os.urandom(20_000)  # spans several CRC chunks
    parts = record(7, body, b'{"deprecation":"true"}')
    [offset] = write(path, parts)
    fd = os.open(path, os.O_RDONLY)
    try:
        read = segments.read(fd, offset, sum(map(len, parts)))
    finally:
        os.close(fd)
    assert read is not None
    head, headers, got = read
    assert (head.seq, head.status, head.flags, head.expires_us) == (7, 200, MARKED, 2_007)
    assert head.record_id == rid("k7")
    assert head.fingerprint == rid("f7")
    assert headers == b'{"deprecation":"true"}'
    assert got == body


def test_a_damaged_or_misplaced_record_does_not_read_back(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    parts = record(1, b"x" * 9000)
    length = sum(map(len, parts))
    [offset] = write(path, parts)
    fd = os.open(path, os.O_RDWR)
    try:
        assert segments.read(fd, offset, length) is not None
        assert segments.read(fd, offset, length - 1) is None  # the wrong length
        assert segments.read(fd, offset + 1, length) is None  # not a record's start
        os.pwrite(fd, b"y", offset + length - 10)  # one byte of the body changed
        assert segments.read(fd, offset, length) is None
    finally:
        os.close(fd)


def test_a_scan_keeps_the_intact_records_and_stops_at_a_torn_tail(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    offsets = write(path, record(1), record(2), record(3))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) - 5])  # the last record lost its end
    scanned = segments.scan(path)
    assert [r.seq for r in scanned.records] == [1, 2]
    assert scanned.end == offsets[2]
    # From the middle, as a reader that has seen the first record already.
    later = segments.scan(path, offsets[1])
    assert [r.seq for r in later.records] == [2]


def test_a_scan_stops_at_garbage_and_at_zeros(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    write(path, record(1))
    end = path.stat().st_size
    with open(path, "ab") as file:
        file.write(b"\0" * 4096)  # blocks of a power loss's tail
    assert segments.scan(path).end == end
    path.write_bytes(b"not a record at all" * 10)
    assert segments.scan(path).records == []


def test_an_oversized_answer_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        segments.pack(
            seq=1,
            created_us=0,
            expires_us=0,
            status=200,
            flags=0,
            record_id=rid("a"),
            fingerprint=rid("b"),
            headers=b"",
            body=b"x" * (segments.MAX_PAYLOAD + 1),
        )


def test_an_index_finds_every_id_and_only_those(tmp_path: Path) -> None:
    path = tmp_path / "1.idx"
    entries = [Entry(rid(f"k{n}"), n * 100, 100, 5_000 + n, MARKED, n) for n in range(1000)]
    rows = [(e.record_id, e.offset, e.length, e.expires_us, e.flags, e.seq) for e in entries]
    segments.write_index(path, reversed(rows), 1, 1000)
    index = Index(path)
    try:
        assert (index.count, index.first_seq, index.last_seq) == (1000, 1, 1000)
        assert index.max_expires_us == 5_999
        for entry in entries:
            assert index.find(entry.record_id) == entry
        assert index.find(rid("absent")) is None
        assert sorted(index.ids()) == sorted(e.record_id for e in entries)
    finally:
        index.close()
    empty = tmp_path / "2.idx"
    segments.write_index(empty, [], 0, 0)
    assert Index(empty).find(rid("k1")) is None


def test_a_damaged_index_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "1.idx"
    segments.write_index(path, [(rid("k"), 0, 10, 1, 0, 1)], 1, 1)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="damaged"):
        Index(path)
    path.write_bytes(b"AF")
    with pytest.raises(ValueError, match="not an index"):
        Index(path)


def first_format(parts: list[bytes]) -> bytes:
    """The same record as the first format wrote it: magic "AFr1", zlib's CRC-32."""
    data = b"".join(parts)
    covered = data[12:]  # the layout is the same: only the magic and the CRC differ
    return b"AFr1" + data[4:8] + struct.pack("<I", zlib.crc32(covered)) + covered


def test_records_and_indexes_of_the_first_format_still_read_back(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    body = os.urandom(12_000)
    old = first_format(record(1, body))
    new = b"".join(record(2))
    path.write_bytes(old + new)
    scanned = segments.scan(path)
    assert [r.seq for r in scanned.records] == [1, 2]  # a log written before and after
    fd = os.open(path, os.O_RDWR)
    try:
        read = segments.read(fd, 0, len(old))
        assert read is not None
        assert read[2] == body
        flipped = bytes([os.pread(fd, 1, len(old) - 10)[0] ^ 0xFF])  # not a random byte: it
        os.pwrite(fd, flipped, len(old) - 10)  # could be the one there (1 run in 256 passed)
        assert segments.read(fd, 0, len(old)) is None
    finally:
        os.close(fd)
    index = tmp_path / "1.idx"
    segments.write_index(index, [(rid("k"), 0, 10, 1, 0, 1)], 1, 1)
    written = index.read_bytes()
    head, entries = written[: segments.INDEX_HEAD.size], written[segments.INDEX_HEAD.size :]
    magic, count, first, last, latest, _ = segments.INDEX_HEAD.unpack(head)
    assert magic == b"AFx2"
    old_head = segments.INDEX_HEAD.pack(b"AFx1", count, first, last, latest, zlib.crc32(entries))
    index.write_bytes(old_head + entries)
    assert Index(index).find(rid("k")) == Entry(rid("k"), 0, 10, 1, 0, 1)


def test_a_record_carries_the_crc32c_of_what_follows_its_crc() -> None:
    data = b"".join(record(3, b"payload"))
    (crc,) = struct.unpack_from("<I", data, 8)
    assert data[:4] == b"AFr2"
    assert crc == google_crc32c.value(data[12:])
    assert crc != zlib.crc32(data[12:])
