"""Uploads counted for the plan's `uploadsPerMonth` quota (shared by the file and plan services)."""

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from apiforge.files.models import File
from apiforge.tools.clock import utcnow
from apiforge.usage.counters import month_start


async def uploads_this_month(
    bind: AsyncSession | AsyncConnection, workspace_id: str, now: datetime | None = None
) -> int:
    """Files the workspace uploaded since the start of the current UTC calendar month, deleted
    ones included (their rows stay as tombstones until the month is over), from the
    `(workspace_id, created_at)` index alone."""
    stmt = select(func.count()).where(
        File.workspace_id == workspace_id, File.created_at >= month_start(now or utcnow())
    )
    return int(await bind.scalar(stmt) or 0)
