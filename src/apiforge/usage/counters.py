"""Usage counted from the request log, for plan quotas (`callsPerMonth`)."""

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from apiforge.tools.clock import utcnow
from apiforge.usage.models import RequestLog


def month_start(now: datetime) -> datetime:
    """The first instant of `now`'s UTC calendar month."""
    now = now.astimezone(UTC)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def calls_this_month(
    session: AsyncSession | AsyncConnection, workspace_id: str, now: datetime | None = None
) -> int:
    """Successful (2xx) calls the workspace made since the start of the current UTC calendar
    month, answered from the `(workspace_id, created_at, status)` index alone. Reads the written
    log, so calls still in the write buffer (under a second old) are not counted yet."""
    stmt = select(func.count()).where(
        RequestLog.workspace_id == workspace_id,
        RequestLog.created_at >= month_start(now or utcnow()),
        RequestLog.status >= 200,
        RequestLog.status < 300,
    )
    return int(await session.scalar(stmt) or 0)
