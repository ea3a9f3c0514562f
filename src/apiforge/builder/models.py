"""Apps, the `dev` definitions of their APIs, published version snapshots, step pricing, the
revocations of their end users' tokens."""

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from apiforge.core.db import Base, JSONType, created_column, id_column, updated_column
from apiforge.idempotency.locking import version_column, versioned


class App(Base):
    __tablename__ = "apps"

    id: Mapped[str] = id_column()
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(String(2000), default="")
    visibility: Mapped[str] = mapped_column(String(16), default="private")  # private | public
    # HS256 secret of the app's `jwtSign` end-user tokens; never returned by the API.
    signing_secret: Mapped[str] = mapped_column(String(128))
    # The secret before the last rotation (sealed like it): still accepted, never used to sign,
    # until `previous_signing_secret_until`; both None once a rotation without a grace ran.
    previous_signing_secret: Mapped[str | None] = mapped_column(String(128), default=None)
    previous_signing_secret_until: Mapped[datetime | None] = mapped_column(default=None)
    # `env` of expressions: {"config": {...}, "secrets": {name: encrypted}}.
    env: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    latest_version: Mapped[str | None] = mapped_column(String(32), default=None)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()
    version: Mapped[int] = version_column()  # optimistic lock (idempotency/locking.py)

    __mapper_args__ = versioned(version)


class ApiDefinition(Base):
    """One API of an app on `dev` (live, editable)."""

    __tablename__ = "app_apis"
    __table_args__ = (UniqueConstraint("app_id", "api"),)

    id: Mapped[str] = id_column()
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    api: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100), default="")
    description: Mapped[str] = mapped_column(String(2000), default="")
    doc_extra: Mapped[str] = mapped_column(Text, default="")
    group: Mapped[str] = mapped_column(String(64), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    price: Mapped[int] = mapped_column(BigInteger, default=0)
    cost: Mapped[int] = mapped_column(BigInteger, default=0)
    params: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    steps: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    return_steps: Mapped[list[Any] | None] = mapped_column(JSONType, default=None)
    auth: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = created_column()
    updated_at: Mapped[datetime] = updated_column()
    version: Mapped[int] = version_column()

    __mapper_args__ = versioned(version)


class AppVersion(Base):
    """An immutable snapshot of every API (and collection schema) of an app. Only its
    deprecation changes: `deprecated` (since `deprecated_at`, RFC 9745) and `sunset_at` (RFC 8594:
    from then on calls are 410), under the optimistic lock `revision` (`version` is the semver
    label)."""

    __tablename__ = "app_versions"
    __table_args__ = (UniqueConstraint("app_id", "version"),)

    id: Mapped[str] = id_column()
    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(32))
    major: Mapped[int] = mapped_column(Integer)
    minor: Mapped[int] = mapped_column(Integer)
    patch: Mapped[int] = mapped_column(Integer)
    notes: Mapped[str] = mapped_column(Text, default="")
    deprecated: Mapped[bool] = mapped_column(Boolean, default=False)
    # Both only while deprecated; a deprecation older than the column has its publish time.
    deprecated_at: Mapped[datetime | None] = mapped_column(default=None)
    sunset_at: Mapped[datetime | None] = mapped_column(default=None)
    snapshot: Mapped[dict[str, Any]] = mapped_column(JSONType)
    published_by: Mapped[str | None] = mapped_column(
        ForeignKey("accounts.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = created_column()
    revision: Mapped[int] = version_column()  # optimistic lock (idempotency/locking.py)

    __mapper_args__ = versioned(revision)


class StepPrice(Base):
    """Admin-set RU cost of one step type (`/api/v1/admin/pricing`)."""

    __tablename__ = "step_prices"

    step_type: Mapped[str] = mapped_column(String(32), primary_key=True)
    cost: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = updated_column()


class EndUserTokenRevocation(Base):
    """When an app last revoked one of its users' tokens in one partition (`jwtRevoke`): the
    gateway refuses that user's tokens of that partition issued before `revoked_at` (to the
    millisecond, rounded up). A row older than the longest token lifetime (and the nodes' clock
    skew) can no longer refuse anything: it is pruned (`engine/revocations.prune_revocations`).
    Deleting the app or the partition's workspace takes its rows (as `user_rights`)."""

    __tablename__ = "end_user_token_revocations"
    __table_args__ = (
        # The app's latest revocation, read with its signing secrets (`builder/signing.py`):
        # one index probe, so a token issued after it needs no lookup of its user.
        Index("ix_end_user_token_revocations_app_revoked", "app_id", "revoked_at"),
    )

    app_id: Mapped[str] = mapped_column(ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    sub: Mapped[str] = mapped_column(String(128), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column()
