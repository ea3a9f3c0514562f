"""Console accounts, their sign-in sessions (refresh-token families) and personal settings."""

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from apiforge.core.db import Base, JSONType, created_column, id_column, updated_column
from apiforge.idempotency.locking import version_column, versioned


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = id_column()
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100), default="")
    avatar_url: Mapped[str] = mapped_column(String(500), default="")
    locale: Mapped[str] = mapped_column(String(20), default="en")
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | disabled
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    last_login_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()
    version: Mapped[int] = version_column()  # optimistic lock (idempotency/locking.py)

    __mapper_args__ = versioned(version)


class LoginSession(Base):
    """One sign-in: the family of rotating refresh tokens; access tokens name it in `sid`."""

    __tablename__ = "login_sessions"

    id: Mapped[str] = id_column()
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_reason: Mapped[str] = mapped_column(String(32), default="")
    created_at: Mapped[datetime] = created_column()
    # Written at sign-in and at each refresh, never per request: what `/user/sessions` shows.
    refreshed_at: Mapped[datetime | None] = mapped_column(default=None)
    client_ip: Mapped[str] = mapped_column(String(45), default="", server_default="")
    user_agent: Mapped[str] = mapped_column(String(255), default="", server_default="")


class RefreshToken(Base):
    __tablename__ = "refresh_tokens"
    __table_args__ = (Index("ix_refresh_tokens_session_id", "session_id"),)

    id: Mapped[str] = id_column()
    session_id: Mapped[str] = mapped_column(ForeignKey("login_sessions.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    expires_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[datetime] = created_column()


class UserSetting(Base):
    """The account's whole `/user/settings` document."""

    __tablename__ = "user_settings"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = updated_column()


class AppSetting(Base):
    """One `/user/settings/apps/{appId}/{key}` value."""

    __tablename__ = "app_settings"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    app_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSONType)
    updated_at: Mapped[datetime] = updated_column()
