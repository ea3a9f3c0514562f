"""`/api/v1/admin/pricing`: the RU cost of each step type (administrators only).

Listed in `api.py` beside the admin router, not included by `builder.router`: an included router
inherits the includer's tags, and the first tag is the module a generated client puts an
operation in (`builder`, where administrators would not look for it).
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from apiforge.accounts.deps import AdminAccount
from apiforge.builder.pricing import PricingService
from apiforge.builder.schemas import StepPriceRead, StepPriceUpdate
from apiforge.http.deps import SessionDep
from apiforge.http.envelope import Envelope, ok
from apiforge.http.pagination import Page, PageDep

router = APIRouter(prefix="/api/v1", tags=["admin"])


def _service(session: SessionDep) -> PricingService:
    return PricingService(session)


PricingServiceDep = Annotated[PricingService, Depends(_service)]
StepType = Annotated[str, Path(max_length=32)]


@router.get("/admin/pricing", summary="RU cost of every step type")
async def list_prices(
    admin: AdminAccount, service: PricingServiceDep, page: PageDep
) -> Envelope[Page[StepPriceRead]]:
    return ok(await service.list_prices(page))


@router.put(
    "/admin/pricing/{step_type}",
    summary="Set the RU cost of a step type",
    description="API costs follow on their next save; published versions on the next publish.",
)
async def set_price(
    step_type: StepType, body: StepPriceUpdate, admin: AdminAccount, service: PricingServiceDep
) -> Envelope[StepPriceRead]:
    return ok(await service.set_price(step_type, body))
