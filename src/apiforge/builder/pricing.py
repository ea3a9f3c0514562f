"""The RU cost of each step type, set by administrators (`/api/v1/admin/pricing`).

API costs are computed from these when an API is saved and again when a version is published, so
a changed price reaches `dev` on the API's next save and published versions on the next publish;
published snapshots keep the cost they were priced at.
"""

from typing import Any

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncSession

from apiforge.builder.models import StepPrice
from apiforge.builder.schemas import StepPriceRead, StepPriceUpdate
from apiforge.core.errors import NotFoundError
from apiforge.engine.catalog import STEP_TYPES
from apiforge.http.pagination import Page, PageParams, fetch_page, order_by

PRICE_SORTS: dict[str, ColumnElement[Any]] = {
    "stepType": StepPrice.step_type.expression,
    "cost": StepPrice.cost.expression,
    "updatedTime": StepPrice.updated_at.expression,
}


class StepTypeNotFoundError(NotFoundError):
    reason = "step_type_not_found"
    message = "Unknown step type"


def price_read(row: StepPrice) -> StepPriceRead:
    return StepPriceRead(step_type=row.step_type, cost=row.cost, updated_time=row.updated_at)


class PricingService:
    """Lists and sets step prices. Never commits."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list_prices(self, params: PageParams) -> Page[StepPriceRead]:
        stmt = order_by(
            select(StepPrice),
            params,
            PRICE_SORTS,
            default="stepType",
            tiebreak=StepPrice.step_type.expression,
            default_order="asc",
        )
        rows, total = await fetch_page(self.session, stmt, params)
        return params.page([price_read(row) for row in rows], total)

    async def set_price(self, step_type: str, data: StepPriceUpdate) -> StepPriceRead:
        """Set the cost of a seeded step type, or of a catalogued one that has no row yet."""
        # No type has a NUL in its name, and PostgreSQL refuses one in a query: a plain 404.
        known = len(step_type) <= 32 and "\x00" not in step_type
        row = await self.session.get(StepPrice, step_type) if known else None
        if row is None:
            if step_type not in STEP_TYPES:
                raise StepTypeNotFoundError()
            row = StepPrice(step_type=step_type, cost=data.cost)
            self.session.add(row)
        row.cost = data.cost
        await self.session.flush()
        await self.session.refresh(row)
        return price_read(row)
