"""Plans and their quotas; every workspace is on exactly one plan."""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from apiforge.core.db import (
    Base,
    JSONType,
    UTCDateTime,
    created_column,
    id_column,
    updated_column,
)
from apiforge.idempotency.locking import version_column, versioned

# Quota names and the free plan's values; -1 means unlimited. Later issues enforce each one.
QUOTA_NAMES = (
    "members",
    "workspaces",
    "apps",
    "storageBytes",
    "records",
    "uploadsPerMonth",
    "callsPerMonth",
    "requestsPerMinute",
    "concurrentRequests",
)
FREE_PLAN_QUOTAS: dict[str, int] = {
    "members": 5,
    "workspaces": 3,
    "apps": 10,
    "storageBytes": 100 * 1024 * 1024,
    "records": 100_000,
    "uploadsPerMonth": 1000,
    "callsPerMonth": 100_000,
    "requestsPerMinute": 600,
    "concurrentRequests": 10,
}


class Plan(Base):
    __tablename__ = "plans"

    id: Mapped[str] = id_column()
    code: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(500), default="")
    quotas: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    is_public: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()
    version: Mapped[int] = version_column()  # optimistic lock (idempotency/locking.py)

    __mapper_args__ = versioned(version)


class QuotaHit(Base):
    """A refusal for a reached quota (spec 000's `rate_limit_logs`): who, on which plan, what.

    One row stands for every refusal of one (workspace, quota, operation) within one UTC minute
    (`hits` of them, the first at `created_at`, the last at `last_at`), so a client hammering a
    reached quota adds at most one row a minute. No foreign keys, like request logs: rows are
    written in batches after the refusal and must not fail when the workspace or plan is gone.
    """

    __tablename__ = "quota_hits"

    id: Mapped[str] = id_column()
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    last_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    workspace_id: Mapped[str] = mapped_column(String(26))
    plan_id: Mapped[str] = mapped_column(String(26))
    quota: Mapped[str] = mapped_column(String(32))
    operation: Mapped[str] = mapped_column(String(64))
    quota_limit: Mapped[int] = mapped_column(BigInteger)
    used: Mapped[int] = mapped_column(BigInteger)
    hits: Mapped[int] = mapped_column(Integer)

    __table_args__ = (
        Index("ix_quota_hits_created", "created_at"),
        Index("ix_quota_hits_workspace_created", "workspace_id", "created_at"),
    )
