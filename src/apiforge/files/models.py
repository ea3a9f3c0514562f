"""One row per uploaded file; its bytes live on disk under the id (`files/storage.py`)."""

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from apiforge.core.db import Base, UTCDateTime, created_column, id_column

MAX_NAME_LENGTH = 255
MAX_CONTENT_TYPE_LENGTH = 127


class File(Base):
    """An upload of workspace `workspace_id`. `name` is the client's file name reduced to a bare
    name — display only, never part of a path. `created_by` is the account that uploaded it and
    `created_by_key` the workspace key it used, if any.

    Deleting a file removes its bytes at once; the row of a file uploaded in the current UTC
    month stays as a tombstone (`deleted_at` set, invisible to every read) so the month's
    `uploadsPerMonth` count still includes it, and goes with the next deletion in a later month.
    """

    __tablename__ = "files"

    id: Mapped[str] = id_column()
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    content_type: Mapped[str] = mapped_column(String(MAX_CONTENT_TYPE_LENGTH))
    size: Mapped[int] = mapped_column(BigInteger)
    md5: Mapped[str] = mapped_column(String(32))  # lowercase hex
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    created_by_key: Mapped[str | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = created_column()
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)

    __table_args__ = (
        # Listing (newest first) and counting this month's uploads, per workspace.
        Index("ix_files_workspace_created", "workspace_id", "created_at"),
    )
