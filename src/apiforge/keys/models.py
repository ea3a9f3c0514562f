"""Subscriptions (a workspace has enabled an app) and API keys (`app-`, `pk-`, `ws-`)."""

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from apiforge.core.db import Base, JSONType, UTCDateTime, created_column, id_column, updated_column
from apiforge.idempotency.locking import version_column, versioned


class Subscription(Base):
    """Workspace `workspace_id` has enabled app `app_id`: every API of it is callable with the
    workspace's keys while `enabled` (spec 002: users enable an app, not single APIs)."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("workspace_id", "app_id"),)

    id: Mapped[str] = id_column()
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()
    version: Mapped[int] = version_column()  # optimistic lock (idempotency/locking.py)

    __mapper_args__ = versioned(version)


class ApiKey(Base):
    """One key. The secret itself is never stored in clear: `secret_hash` (SHA-256) finds the key
    on each call, `sealed_secret` (Fernet) lets the server recompute HMAC signatures, `prefix` is
    what lists show. `app`/`pk` keys belong to a subscription, `ws` keys to a workspace with a
    `role`. Revoked keys are kept (request logs refer to them) with `revoked_at` set."""

    __tablename__ = "api_keys"

    id: Mapped[str] = id_column()
    kind: Mapped[str] = mapped_column(String(8))  # app | pk | ws
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    subscription_id: Mapped[str | None] = mapped_column(
        ForeignKey("subscriptions.id", ondelete="CASCADE"), index=True, default=None
    )
    app_id: Mapped[str | None] = mapped_column(
        ForeignKey("apps.id", ondelete="CASCADE"), index=True, default=None
    )
    role: Mapped[str | None] = mapped_column(String(16), default=None)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    sealed_secret: Mapped[str] = mapped_column(String(255))
    allowed_ips: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    allowed_origins: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), default=None)
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    revoked_by: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = created_column()
    version: Mapped[int] = version_column()  # optimistic lock (idempotency/locking.py)

    __mapper_args__ = versioned(version)
