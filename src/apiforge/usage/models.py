"""The request log: one append-only row per gateway call, refused or not.

No foreign keys on purpose: rows are written in batches some time after the call, and a batch must
never fail because the workspace, app or key it names was deleted in between. Rows of a deleted
workspace are unreachable (nobody is its member) rather than cascaded.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Float, Index, SmallInteger, String, text
from sqlalchemy.orm import Mapped, mapped_column

from apiforge.core.db import Base, CompactJSONType, UTCDateTime, id_column

# The `api` of an ad-hoc workflow run's row (`POST /api/v1/workflows`): no API's name can be it.
# Its rows are not gateway calls, so `callsPerMonth` leaves them out (usage/counters.py).
WORKFLOW_API = "(workflow)"


class RequestLog(Base):
    __tablename__ = "request_logs"

    id: Mapped[str] = id_column()
    # When the call arrived (not when the row was written).
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), nullable=False)
    request_id: Mapped[str] = mapped_column(String(128))
    # The calling workspace (who pays, whose partition); None when the caller was refused before
    # a workspace was known (no or invalid credentials, a console caller outside the app's
    # workspace).
    workspace_id: Mapped[str | None] = mapped_column(String(26))
    # The workspace that owns the called app; None when the app was never resolved.
    app_workspace_id: Mapped[str | None] = mapped_column(String(26))
    account_id: Mapped[str | None] = mapped_column(String(26))
    key_id: Mapped[str | None] = mapped_column(String(26))
    caller_kind: Mapped[str | None] = mapped_column(String(16))
    app_id: Mapped[str] = mapped_column(String(26))
    api: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    status: Mapped[int] = mapped_column(SmallInteger)
    reason: Mapped[str] = mapped_column(String(64))
    latency_ms: Mapped[float] = mapped_column(Float)
    client_ip: Mapped[str] = mapped_column(String(45))
    # Sensitive params masked; None when the API's params were never known (an early refusal),
    # so a secret sent to an API that was not resolved is never written in clear.
    # Written as orjson writes them, the encoding their size cap measures (usage/buffer.py).
    args: Mapped[dict[str, Any] | None] = mapped_column(CompactJSONType)
    # RU debited from the calling workspace for this call: its ledger `call` entry's amount,
    # negated, written by the charge that commits the row (billing/charging.py). 0 for a call
    # that moved nothing (refused, failed, replayed, free); None only for rows written before
    # the column existed (migration 0020).
    amount: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        # The caller's list (newest first, optionally a time range) and the monthly count of
        # successful calls, which reads `status` from the index alone.
        Index("ix_request_logs_workspace_created", "workspace_id", "created_at", "status"),
        # The builder's list: calls to the apps of one workspace, newest first.
        Index("ix_request_logs_app_workspace_created", "app_workspace_id", "created_at"),
        # Workflow runs only (written only by runs): the monthly count subtracts them, so it
        # never reads every call's row for its `api`.
        Index(
            "ix_request_logs_workflow_runs",
            "workspace_id",
            "created_at",
            "status",
            sqlite_where=text(f"api = '{WORKFLOW_API}'"),
            postgresql_where=text(f"api = '{WORKFLOW_API}'"),
        ),
    )
