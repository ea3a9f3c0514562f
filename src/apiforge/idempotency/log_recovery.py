"""Reading the answer log again when its owner opens it (`answer_log.py`): after a crash, the
segments that were still open have no index. Their intact records stay when their transaction
committed (a marker row covers them, or none was needed); the rest — a torn tail, a transaction
that never committed — is cut off, and they are sealed. A marker row whose record is nowhere
names a lost answer: the owner writes it a tombstone, so its key is refused, never run twice.
Only then, the tombstones on the disk, is every marker row spent (`spend`): spent first, a start
that failed to write them (a full disk) or a power loss right after it forgot those keys."""

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from apiforge.idempotency import segments
from apiforge.idempotency.segments import ID_SIZE, LOST, MARKED, Index, Segment, index_segment

_MARKS = "SELECT seq, ids FROM idempotency_answer_marks"
_SPENT = "DELETE FROM idempotency_answer_marks"


@dataclass(frozen=True, slots=True)
class Recovered:
    sealed: list[Segment]  # every segment, sealed, oldest first
    last_seq: int  # the highest sequence number the log or a marker used
    last_number: int  # the highest segment number
    lost: list[str]  # record ids whose answers committed but whose records are gone


def recover(directory: Path, db: sqlite3.Connection) -> Recovered:
    names = sorted(os.listdir(directory))
    for name in names:
        if name.endswith(".tmp"):  # an index whose writing a crash cut short
            (directory / name).unlink()
    sealed: list[Segment] = []
    unsealed: list[Path] = []
    last_number = 0
    for path in (directory / name for name in names if name.endswith(".log")):
        last_number = max(last_number, int(path.stem))
        try:
            index = Index(path.with_suffix(".idx"))
        except (OSError, ValueError):  # none, or damaged: read the segment itself
            unsealed.append(path)
            continue
        sealed.append(Segment(int(path.stem), path, entries=None, index=index))
    markers = {
        first + n: ids[n * ID_SIZE : (n + 1) * ID_SIZE].hex()
        for first, ids in db.execute(_MARKS)
        for n in range(len(ids) // ID_SIZE)
    }
    last_seq = max([s.index.last_seq for s in sealed if s.index] + [*markers, 0])
    kept: set[int] = set()
    for path in unsealed:
        segment = _read_again(path, markers, kept)
        if segment is not None:
            last_seq = max(last_seq, segment.last_seq)
            sealed.append(segment)
    sealed.sort(key=lambda s: s.number)
    lost = [rid for seq, rid in markers.items() if seq not in kept and not _holds(sealed, rid, seq)]
    return Recovered(sealed, last_seq, last_number, lost)


def spend(db: sqlite3.Connection) -> None:
    """Delete every marker row: once `recover`'s segments are sealed and the tombstones of its
    lost answers are on the disk, none is needed."""
    db.execute(_SPENT)
    db.commit()


def _read_again(path: Path, markers: dict[int, str], kept: set[int]) -> Segment | None:
    """A segment a crash left open, cut after its last intact record and sealed with the
    committed ones (their seqs added to `kept`); None when nothing of it was intact."""
    scanned = segments.scan(path)
    if os.stat(path).st_size > scanned.end:
        os.truncate(path, scanned.end)  # a torn tail
    if not scanned.records:
        path.unlink()
        return None
    entries: dict[str, tuple[int, int, int, int, int]] = {}
    for record in scanned.records:
        if record.flags & MARKED and record.seq not in markers:
            continue  # its transaction never committed
        kept.add(record.seq)
        entry = (record.offset, record.length, record.expires_us, record.flags, record.seq)
        entries[record.record_id.hex()] = entry
    segment = Segment(int(path.stem), path, entries=entries)
    segment.first_seq = min(r.seq for r in scanned.records)
    segment.last_seq = max(r.seq for r in scanned.records)
    index_segment(segment)
    segment.entries = None
    return segment


def _holds(sealed: list[Segment], record_id: str, seq: int) -> bool:
    """Whether a sealed segment holds the record `seq` of `record_id` (a marker row left behind
    when its segment was sealed just before a crash), or a later tombstone of it (written by a
    start that failed, or stopped, before it spent the markers)."""
    key = bytes.fromhex(record_id)
    for segment in sealed:
        assert segment.index is not None
        entry = segment.index.find(key)
        if entry is not None and (entry.seq == seq or (entry.flags & LOST and entry.seq > seq)):
            return True
    return False
