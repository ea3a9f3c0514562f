"""The answer log as another process sees it (`answer_log.py`): a process that does not own the
log — a second server on the same SQLite file — looks gateway answers up in it before it runs a
key of its own, and again before it commits one: in the sealed segments' indexes, and in the
open segments read as far as the owner has written them, each record counted only once its
marker row has committed."""

import contextlib
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from apiforge.idempotency import segments
from apiforge.idempotency.segments import ID_SIZE, LOST, MARKED, Found, Index, Segment, find_sealed

_COVERING = "SELECT seq, ids FROM idempotency_answer_marks WHERE seq <= ? ORDER BY seq DESC LIMIT 1"


@dataclass(slots=True)
class _Tail:
    """An open segment of the owner's, read as far as it is written."""

    path: Path
    cursor: int = 0
    records: dict[str, segments.Record] = field(default_factory=dict)


class LogReader:
    """What this process has read of the log so far (lookups run on several threads: locked)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._sealed: list[Segment] = []  # oldest first
        self._tails: dict[str, _Tail] = {}
        self._seen: set[str] = set()  # index files already mapped

    def find(self, record_id: str, db: sqlite3.Connection | None) -> Found | None:
        """The newest committed answer of `record_id` (maybe expired: the caller checks), or
        None; open segments' markers are checked on `db` (none: not counted)."""
        with self._lock:
            self._refresh()
            for tail in sorted(self._tails.values(), key=lambda t: t.path.name, reverse=True):
                scanned = segments.scan(tail.path, tail.cursor)
                tail.cursor = scanned.end
                for record in scanned.records:
                    tail.records[record.record_id.hex()] = record
                found = tail.records.get(record_id)
                if found is None:
                    continue
                if found.flags & MARKED and (db is None or not _has_marker(db, found.seq)):
                    continue  # not committed (yet, or ever)
                lost = bool(found.flags & LOST)
                return Found(tail.path, found.offset, found.length, found.expires_us, lost)
            return find_sealed(self._sealed, bytes.fromhex(record_id))

    def _refresh(self) -> None:
        """Pick up the segments the owner opened or sealed since the last look."""
        names = set(os.listdir(self.directory))
        for name in sorted(names - self._seen):
            path = self.directory / name
            if name.endswith(".idx"):
                with contextlib.suppress(OSError, ValueError):  # half-written: next time
                    index = Index(path)
                    log_path = path.with_suffix(".log")
                    sealed = Segment(int(path.stem), log_path, entries=None, index=index)
                    self._sealed = sorted([*self._sealed, sealed], key=lambda s: s.number)
                    self._tails.pop(log_path.name, None)
                    self._seen.add(name)
            elif name.endswith(".log") and f"{path.stem}.idx" not in names:
                self._tails.setdefault(name, _Tail(path))
        gone = {s.index_path.name for s in self._sealed} - names
        if gone:  # swept by the owner
            self._sealed = [s for s in self._sealed if s.index_path.name not in gone]
            self._seen -= gone
        for name in [name for name in self._tails if name not in names]:
            del self._tails[name]  # sealed and swept before this process looked again


def _has_marker(db: sqlite3.Connection, seq: int) -> bool:
    """Whether a committed marker row covers `seq` (its first seq and its ids' count)."""
    row = db.execute(_COVERING, (seq,)).fetchone()
    return row is not None and seq < row[0] + len(row[1]) // ID_SIZE
