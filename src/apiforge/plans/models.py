"""Plans and their quotas; every workspace is on exactly one plan."""

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, String
from sqlalchemy.orm import Mapped, mapped_column

from apiforge.core.db import Base, JSONType, created_column, id_column, updated_column

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
