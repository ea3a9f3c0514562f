"""Stored outcomes of idempotent requests and one-time anti-duplicate tokens."""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from apiforge.core.db import Base, JSONType, UTCDateTime


class IdempotencyRecord(Base):
    """One idempotency key (or sequence number) of one caller.

    `status` is null while the first request runs (`expires_at` is then its lease); once it
    completes, the response is kept until `expires_at` (the retention). A row past `expires_at`
    is dead either way and is taken over or swept.
    """

    __tablename__ = "idempotency_records"
    # SQLite: a rowid table (migration 0010). Stored answers are large (a page of records is
    # ~18 KB): keyed by `id` itself, the table's B-tree held a few rows per leaf, so looking a
    # new key up read a cold leaf (~45 us) and storing one split random leaves. With a rowid
    # the answers append in order and `id` is a compact index of its own (~5 us a lookup).
    # The sweep's index is on `created_at`, which a completion never changes.
    __table_args__ = (Index("ix_idempotency_records_created_at", "created_at"),)

    # SHA-256 of (kind, caller scope, key): fixed width, and the caller's key never stored raw.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(26))  # the request that holds the claim
    status: Mapped[int | None] = mapped_column(Integer, default=None)
    headers: Mapped[dict[str, Any] | None] = mapped_column(JSONType, default=None)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IdempotencyToken(Base):
    """A one-time token (spec 003 §4.6.3), stored as its SHA-256 and bound to one caller."""

    __tablename__ = "idempotency_tokens"
    __table_args__ = (Index("ix_idempotency_tokens_expires_at", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IdempotencyAnswerMark(Base):
    """The embedded database's answer log (`answer_log.py`): one row per commit that carried
    gateway answers of calls with effects, inserted by that commit — the answers' first seq
    and their record ids (32 bytes each, in seq order). Their records in the log count only
    with it; an id whose record was lost marks its key as run. Deleted once the answers'
    segment is sealed, so the table holds only the open segments' markers."""

    __tablename__ = "idempotency_answer_marks"

    # SQLite: INTEGER PRIMARY KEY, the rowid itself (appended in order, no index of its own).
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=False
    )
    ids: Mapped[bytes] = mapped_column(LargeBinary)
