"""Usage counted from the request log, for plan quotas (`callsPerMonth`)."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, literal_column, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from apiforge.tools.clock import utcnow
from apiforge.usage.models import WORKFLOW_API, RequestLog


def month_start(now: datetime) -> datetime:
    """The first instant of `now`'s UTC calendar month."""
    now = now.astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime) -> datetime:
    """The first instant of the UTC calendar month after `now`'s: when monthly counts (and the
    quotas on them) start afresh."""
    return (month_start(now) + timedelta(days=32)).replace(day=1)


# The workflow name inline, not as a parameter: only a literal lets the planner (SQLite, and a
# PostgreSQL prepared statement's generic plan) match the partial index on workflow runs.
_IS_WORKFLOW = RequestLog.api == literal_column(f"'{WORKFLOW_API}'")


async def calls_this_month(
    session: AsyncSession | AsyncConnection, workspace_id: str, now: datetime | None = None
) -> int:
    """Successful (2xx) gateway calls the workspace made since the start of the current UTC
    calendar month. Its workflow runs are in the same log but are no gateway calls
    (docs/decisions.md): they are counted apart and subtracted, so the calls are still counted
    from the `(workspace_id, created_at, status)` index alone and the runs from a partial index
    holding only theirs, never by reading every call's row for its `api`. Reads the written
    log, so calls still in the write buffer (under a second old) are not counted yet."""
    since = month_start(now or utcnow())
    conditions = (
        RequestLog.workspace_id == workspace_id,
        RequestLog.created_at >= since,
        RequestLog.status >= 200,
        RequestLog.status < 300,
    )
    calls = select(func.count()).where(*conditions).scalar_subquery()
    runs = select(func.count()).where(*conditions, _IS_WORKFLOW).scalar_subquery()
    return int(await session.scalar(select(calls - runs)) or 0)
