"""Per-app traffic limits: one row per app that has any (apps without a row have none, and
answer version 0: the first `PUT` creates version 1)."""

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from apiforge.core.db import Base, JSONType, updated_column
from apiforge.idempotency.locking import version_column, versioned


class TrafficLimits(Base):
    """The app's limits document (`schemas.TrafficLimitsDocument`, camelCase): app-wide values
    and per-API overrides. Operational settings, not part of a version: a change applies to every
    version at once, without publishing."""

    __tablename__ = "traffic_limits"

    app_id: Mapped[str] = mapped_column(
        String(26), ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True
    )
    limits: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = updated_column()
    version: Mapped[int] = version_column()  # optimistic lock (idempotency/locking.py)

    __mapper_args__ = versioned(version)
