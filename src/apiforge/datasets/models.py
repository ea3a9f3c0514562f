"""Collections an app defines, their records (JSON documents) and end-user rights."""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from apiforge.core.db import Base, JSONType, created_column, id_column, updated_column
from apiforge.idempotency.locking import version_column, versioned


class Collection(Base):
    __tablename__ = "collections"
    __table_args__ = (UniqueConstraint("app_id", "name"),)

    id: Mapped[str] = id_column()
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(2000), default="")
    # [{"name", "type", "required", "unique", "indexed", "encrypted", "default"}]
    fields: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()
    version: Mapped[int] = version_column()  # optimistic lock (idempotency/locking.py)

    __mapper_args__ = versioned(version)


class Record(Base):
    """One document of a collection, in the partition of the workspace that wrote it."""

    __tablename__ = "records"
    __table_args__ = (
        # `id` last: "newest first" pages ORDER BY created_at, id and read this index in order.
        Index("ix_records_partition_created", "collection_id", "partition", "created_at", "id"),
        # A workspace's records and stored bytes over all collections (plan quotas), read from
        # the index alone.
        Index("ix_records_partition_size", "partition", "size"),
    )

    id: Mapped[str] = id_column()
    collection_id: Mapped[str] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    partition: Mapped[str] = mapped_column(String(26))  # the calling workspace's id
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    version: Mapped[int] = mapped_column(Integer, default=1)
    size: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()


class CollectionWrites(Base):
    """How many record writes each collection has seen, counted by triggers on `records` in the
    writing transaction itself (SQLite only, migration 0009): a cached page count is still exact
    while its collection's number is unchanged (`datasets/store.py`, `PreparedPage`), whoever
    wrote — this process, another one, a shell. PostgreSQL keeps the table empty: concurrent
    writers of one collection would queue on its row."""

    __tablename__ = "collection_writes"
    __table_args__ = {"sqlite_with_rowid": False}

    collection_id: Mapped[str] = mapped_column(String(26), primary_key=True)
    writes: Mapped[int] = mapped_column(BigInteger)


class UserRight(Base):
    """The built-in user system: (workspace, userId, appId, target) -> rights."""

    __tablename__ = "user_rights"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    target: Mapped[str] = mapped_column(String(128), primary_key=True)
    rights: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    updated_at: Mapped[datetime] = updated_column()
