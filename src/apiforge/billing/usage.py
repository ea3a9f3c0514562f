"""`/usage/spend` and `/usage/earnings`: RU per hour or day and per app or API, from the ledger.

Spend is what the current workspace's spendable wallet paid for calls; earnings are what its
earnings wallet received from calls to its apps (price minus cost). Both are summed by the
database over the `(workspace_id, created_at)` index, in the chart formats of spec 003
(`usage/charts.py`: zero-filled `xAxis`/`series`, or pie shares).
"""

from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from apiforge.billing.models import LedgerEntry, Wallet
from apiforge.usage.charts import (
    ChartQuery,
    PieChart,
    TimeSeriesChart,
    bucket_label_sql,
    pie,
    time_series,
)
from apiforge.usage.service import CallChartService
from apiforge.workspaces.service import CurrentWorkspace

Side = Literal["spend", "earnings"]
_WALLET_KIND: dict[Side, str] = {"spend": "balance", "earnings": "earnings"}


class MoneyChartService:
    """Never commits (it only reads)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def chart(
        self, current: CurrentWorkspace, query: ChartQuery, side: Side, app_id: str | None
    ) -> TimeSeriesChart | PieChart:
        chart_range = query.range
        conditions: list[ColumnElement[bool]] = [
            LedgerEntry.workspace_id == current.id,
            LedgerEntry.kind == "call",
            LedgerEntry.created_at >= chart_range.start,
            LedgerEntry.created_at < chart_range.end,
            Wallet.kind == _WALLET_KIND[side],
        ]
        if app_id is not None:
            conditions.append(LedgerEntry.app_id == app_id)
        keys: list[ColumnElement[Any]] = [LedgerEntry.app_id.expression]
        if query.group_by == "api":
            keys.append(LedgerEntry.api.expression)
        # Spend entries are debits (negative): shown as positive RU spent.
        total = (
            func.sum(LedgerEntry.amount) if side == "earnings" else -func.sum(LedgerEntry.amount)
        )
        joined = LedgerEntry.__table__.join(Wallet.__table__, Wallet.id == LedgerEntry.wallet_id)
        names = CallChartService(self.session)
        if query.chart == "pie":
            stmt = select(*keys, total).select_from(joined).where(*conditions).group_by(*keys)
            rows = (await self.session.execute(stmt)).all()
            labels = await names._names(current, {tuple(row[:-1]) for row in rows})
            return pie([(_series_id(row[:-1]), int(row[-1])) for row in rows], labels, query.top)
        dialect = self.session.get_bind().dialect.name
        bucket = bucket_label_sql(
            LedgerEntry.created_at.expression, chart_range.granularity, dialect
        )
        stmt = (
            select(bucket, *keys, total)
            .select_from(joined)
            .where(*conditions)
            .group_by(bucket, *keys)
        )
        rows = (await self.session.execute(stmt)).all()
        labels = await names._names(current, {tuple(row[1:-1]) for row in rows})
        series = [(str(row[0]), _series_id(row[1:-1]), int(row[-1])) for row in rows]
        return time_series(series, chart_range, labels, query.top)


def _series_id(key: Any) -> str:
    """`appId` for per-app series, `appId/api` for per-API ones (as `/usage/calls`)."""
    return "/".join(str(part) for part in key)
